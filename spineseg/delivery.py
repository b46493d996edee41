"""Delivery of the SEG files to the PACS: DICOMweb STOW-RS and DIMSE C-STORE, with bounded retries.

Retries (exponential backoff, bounded in attempts *and* total seconds) only for faults that can pass:
connection errors, timeouts, HTTP 5xx/408/429, DIMSE "out of resources". Other refusals (wrong
credentials, a 4xx, a C-STORE failure status) fail at once. A SEG that could not be delivered stays
in the output folder and the report says why; ``python -m spineseg.resend OUT`` sends it later.
Secrets are never logged and never written to the report.
"""
from __future__ import annotations

import logging
import os
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pydicom

log = logging.getLogger("spineseg")


@dataclass
class RetryPolicy:
    max_attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 20.0
    total_seconds: float = 120.0

    def delays(self):
        delay = self.initial_delay
        while True:
            yield delay
            delay = min(delay * 2, self.max_delay)


@dataclass
class StowDestination:
    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    verify_tls: bool = True
    timeout: float = 30.0
    kind: str = "stow-rs"

    @property
    def name(self) -> str:
        """The URL without any user info: safe to log and report."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class CStoreDestination:
    host: str
    port: int
    called_aet: str
    calling_aet: str = "SPINESEG"
    tls: bool = False
    ca_bundle: str | None = None
    timeout: float = 30.0
    kind: str = "c-store"

    @property
    def name(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"


class Transient(Exception):
    """A fault worth retrying."""


class Refused(Exception):
    """A definitive refusal: retrying cannot help."""


def destinations_from_settings(settings: dict | None = None, env: dict | None = None) -> list:
    """Destinations from app.yaml's ``spineseg.delivery`` section and SPINESEG_* variables (which win)."""
    env = os.environ if env is None else env
    s = dict((settings or {}).get("delivery", {}) or {})
    stow = dict(s.get("stow", {}) or {})
    cstore = dict(s.get("cstore", {}) or {})
    for var, key in (("SPINESEG_STOW_URL", "url"), ("SPINESEG_STOW_USER", "user"),
                     ("SPINESEG_STOW_PASSWORD", "password"), ("SPINESEG_STOW_TOKEN", "token"),
                     ("SPINESEG_STOW_CA_BUNDLE", "ca_bundle")):
        if env.get(var):
            stow[key] = env[var]
    if env.get("SPINESEG_STOW_VERIFY_TLS"):
        stow["verify_tls"] = env["SPINESEG_STOW_VERIFY_TLS"].lower() not in ("0", "false", "no")
    for var, key in (("SPINESEG_CSTORE_HOST", "host"), ("SPINESEG_CSTORE_PORT", "port"),
                     ("SPINESEG_CSTORE_AET", "called_aet"), ("SPINESEG_CSTORE_CALLING_AET", "calling_aet")):
        if env.get(var):
            cstore[key] = env[var]
    if env.get("SPINESEG_CSTORE_TLS"):
        cstore["tls"] = env["SPINESEG_CSTORE_TLS"].lower() in ("1", "true", "yes")
    stow = {k: v for k, v in stow.items() if v not in (None, "")}
    cstore = {k: v for k, v in cstore.items() if v not in (None, "")}
    out = []
    if stow.get("url"):
        out.append(StowDestination(**stow))
    if cstore.get("host"):
        cstore["port"] = int(cstore.get("port", 104))
        cstore.setdefault("called_aet", "ANY-SCP")
        out.append(CStoreDestination(**cstore))
    return out


def policy_from_settings(settings: dict | None = None, env: dict | None = None) -> RetryPolicy:
    env = os.environ if env is None else env
    p = dict(((settings or {}).get("delivery", {}) or {}).get("retry", {}) or {})
    if env.get("SPINESEG_DELIVERY_MAX_ATTEMPTS"):
        p["max_attempts"] = int(env["SPINESEG_DELIVERY_MAX_ATTEMPTS"])
    if env.get("SPINESEG_DELIVERY_MAX_SECONDS"):
        p["total_seconds"] = float(env["SPINESEG_DELIVERY_MAX_SECONDS"])
    if env.get("SPINESEG_DELIVERY_INITIAL_DELAY"):
        p["initial_delay"] = float(env["SPINESEG_DELIVERY_INITIAL_DELAY"])
    return RetryPolicy(**p)


# --- STOW-RS ----------------------------------------------------------------------------------
def _stow_once(dest: StowDestination, datasets: list) -> list[dict]:
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if dest.token:
        session.headers["Authorization"] = f"Bearer {dest.token}"
    elif dest.user:
        session.auth = requests.auth.HTTPBasicAuth(dest.user, dest.password or "")
    session.verify = dest.ca_bundle or dest.verify_tls
    client = DICOMwebClient(url=dest.url, session=session, timeout=dest.timeout)
    client.set_http_retry_params(retry=False)       # our own bounded policy decides
    try:
        response = client.store_instances(datasets)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        reason = f"HTTP {status} {getattr(exc.response, 'reason', '')}".strip()
        if status >= 500 or status in (408, 429):
            raise Transient(reason) from exc
        if status in (401, 403):
            raise Refused(f"{reason}: the PACS refused the credentials; check SPINESEG_STOW_USER/PASSWORD/TOKEN") \
                from exc
        raise Refused(reason) from exc
    except requests.exceptions.SSLError as exc:     # certificate problems do not pass by themselves
        raise Refused(f"TLS error talking to {dest.name}: {type(exc).__name__}; check SPINESEG_STOW_CA_BUNDLE") \
            from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise Transient(f"{type(exc).__name__}: cannot reach {dest.name}") from exc
    failed = {str(item.ReferencedSOPInstanceUID): int(getattr(item, "FailureReason", 0))
              for item in getattr(response, "FailedSOPSequence", []) or []}
    results = []
    for ds in datasets:
        uid = str(ds.SOPInstanceUID)
        results.append({"sop_instance_uid": uid, "status": "failed" if uid in failed else "stored",
                        **({"failure_reason": hex(failed[uid])} if uid in failed else {})})
    if failed:
        raise Refused(f"the PACS rejected {len(failed)} instance(s): "
                      + ", ".join(f"{u} (0x{r:04X})" for u, r in failed.items()))
    return results


# --- C-STORE ----------------------------------------------------------------------------------
def _cstore_once(dest: CStoreDestination, datasets: list) -> list[dict]:
    from pynetdicom import AE

    ae = AE(ae_title=dest.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = dest.timeout
    ae.connection_timeout = dest.timeout
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    tls = None
    if dest.tls:
        ctx = ssl.create_default_context(cafile=dest.ca_bundle)
        tls = (ctx, dest.host)
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.called_aet, tls_args=tls)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise Refused(f"association rejected by {dest.name}; check the AE titles")
        raise Transient(f"cannot associate with {dest.name}")
    results = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in (0x0000, 0xB000, 0xB007, 0xB006):
                results.append({"sop_instance_uid": str(ds.SOPInstanceUID), "status": "stored",
                                **({"warning": hex(code)} if code else {})})
            elif code == -1:
                raise Transient(f"no C-STORE response from {dest.name}")
            elif 0xA700 <= code <= 0xA7FF:
                raise Transient(f"{dest.name} is out of resources (0x{code:04X})")
            else:
                raise Refused(f"{dest.name} refused {ds.SOPInstanceUID} with status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def deliver(files: list[Path], dest, policy: RetryPolicy, sleep=time.sleep) -> dict:
    """Send ``files`` to ``dest``; return a report entry (never raises for delivery faults)."""
    datasets = [pydicom.dcmread(f) for f in files]
    send = _stow_once if dest.kind == "stow-rs" else _cstore_once
    started = time.monotonic()
    attempts, reason = 0, ""
    delays = policy.delays()
    while True:
        attempts += 1
        try:
            instances = send(dest, datasets)
            entry = {"status": "delivered", "instances": instances}
            break
        except Refused as exc:
            reason = str(exc)
            entry = {"status": "failed", "retryable": False}
            break
        except Transient as exc:
            reason = str(exc)
            wait = next(delays)
            elapsed = time.monotonic() - started
            if attempts >= policy.max_attempts or elapsed + wait > policy.total_seconds:
                entry = {"status": "failed", "retryable": True}
                break
            log.warning("delivery to %s: %s; retry %d in %.1f s", dest.name, reason, attempts, wait)
            sleep(wait)
    entry.update({"destination": dest.name, "kind": dest.kind, "attempts": attempts,
                  "seconds": round(time.monotonic() - started, 2), "files": [Path(f).name for f in files]})
    if entry["status"] == "failed":
        entry["reason"] = reason
        log.error("delivery to %s failed after %d attempt(s): %s", dest.name, attempts, reason)
    else:
        log.info("delivered %d file(s) to %s in %d attempt(s)", len(files), dest.name, attempts)
    return entry


def deliver_all(files: list[Path], destinations: list, policy: RetryPolicy) -> dict:
    """The report's ``delivery`` section for sending ``files`` to every destination."""
    if not destinations:
        return {"configured": False, "destinations": [], "note": "no destination configured; nothing was sent"}
    if not files:
        return {"configured": True, "destinations": [], "note": "no SEG to send"}
    results = [deliver(files, d, policy) for d in destinations]
    return {"configured": True, "destinations": results,
            "all_delivered": all(r["status"] == "delivered" for r in results)}
