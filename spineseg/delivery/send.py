"""Delivery of the SEG files to the PACS: DICOMweb STOW-RS and DIMSE C-STORE, with bounded retries.

Retries (exponential backoff, bounded in attempts *and* total seconds) only for faults that can pass:
connection errors, timeouts, HTTP 5xx/408/429, DIMSE "out of resources". Other refusals (wrong
credentials, a 4xx, a C-STORE failure status) fail at once. A SEG that could not be delivered stays
in the output folder and the report says why; ``python -m spineseg.resend OUT`` sends it later.
Secrets are never logged and never written to the report. Settings are read and checked in
:mod:`spineseg.settings`; the hard per-attempt and total deadlines are :mod:`spineseg.delivery.deadline`'s.
"""
from __future__ import annotations

import logging
import re
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import pydicom

from spineseg.delivery.deadline import Attempt, DeadlinePassed, deadline_adapter, run_before
from spineseg.errors import SpineSegError

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
        return safe_url(self.url)


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to log and report."""
    parts = urlsplit(url)
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


class Redirected(Refused):
    """The peer answered with a redirect (3xx), which is never followed."""

    def __init__(self, response):
        location = response.headers.get("Location")
        try:
            where = f"to {safe_url(urljoin(response.url, location))[:200]}" if location else "without a Location"
        except ValueError:          # e.g. a port that is not a number
            where = "to an unreadable Location"
        super().__init__(f"HTTP {response.status_code} {response.reason or ''}".strip()
                         + f": the PACS redirects {where}; redirects are not followed (they would send the SEG, "
                           "and on the same server the credentials, somewhere not configured); "
                           "set spineseg.delivery.stow.url (or SPINESEG_STOW_URL) to the address that stores")


def _session():
    """A requests session that sends each request once, to the URL asked, and never follows a redirect:
    requests would re-send the body (and, to the same origin, the credentials) to the Location. Every
    request of a session goes through ``send`` (``resolve_redirects`` included), and dicomweb-client
    calls ``session.post`` without ``allow_redirects``, so this is the one hook that holds for all."""
    import requests

    class NoRedirects(requests.Session):
        def send(self, request, **kwargs):
            kwargs["allow_redirects"] = False
            response = super().send(request, **kwargs)
            if 300 <= response.status_code < 400:
                response.close()
                raise Redirected(response)
            return response
    return NoRedirects()



SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
OK_STATUSES = (0x0000, 0xB000, 0xB007, 0xB006)


def scrub(text: str, dest) -> str:
    """``text`` without the destination's secrets or any URL user info, for logs and the report."""
    text = re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@", r"\1", str(text))
    for secret in (getattr(dest, "password", None), getattr(dest, "token", None)):
        if secret:
            text = text.replace(secret, "***")
    return " ".join(text.split())[:500]


# --- STOW-RS ----------------------------------------------------------------------------------
def _stow_once(dest: StowDestination, datasets: list, attempt: Attempt) -> list[dict]:
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = _session()
    session.mount("http://", deadline_adapter(attempt))
    session.mount("https://", deadline_adapter(attempt))
    if dest.token:
        session.headers["Authorization"] = f"Bearer {dest.token}"
    elif dest.user:
        session.auth = requests.auth.HTTPBasicAuth(dest.user, dest.password or "")
    session.verify = dest.ca_bundle or dest.verify_tls
    answers: list = []
    session.hooks["response"].append(lambda r, *a, **k: answers.append(r))
    timeout = max(0.1, min(dest.timeout, attempt.remaining()))
    client = DICOMwebClient(url=dest.url, session=session, timeout=(timeout, timeout))
    client.set_http_retry_params(retry=False)       # our own bounded policy decides
    try:
        response = client.store_instances(datasets)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        reason = f"HTTP {status} {getattr(exc.response, 'reason', '')}".strip()
        if status >= 500 or status in (408, 429):
            raise Transient(reason) from exc
        if status in (401, 403):
            raise Refused(f"{reason}: the PACS refused the credentials; check spineseg.delivery.stow.user, "
                          "password, token (SPINESEG_STOW_USER, _PASSWORD, _TOKEN)") from exc
        raise Refused(reason) from exc
    except requests.exceptions.SSLError as exc:     # certificate problems do not pass by themselves
        raise Refused(f"TLS error talking to {dest.name}: {type(exc).__name__}; check "
                      "spineseg.delivery.stow.ca_bundle (SPINESEG_STOW_CA_BUNDLE)") from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise Transient(f"{type(exc).__name__}: cannot reach {dest.name}") from exc
    except (KeyError, ValueError) as exc:           # no Content-Type, malformed JSON or XML
        raise Refused(f"{_answer(answers)} is not a DICOMweb store response ({type(exc).__name__}); "
                      "check that spineseg.delivery.stow.url (SPINESEG_STOW_URL) is the DICOMweb root, not a login "
                      "page") from exc
    return _stow_results(response, datasets, _answer(answers))


def _answer(answers: list) -> str:
    if not answers:
        return "the answer"
    r = answers[-1]
    return f"HTTP {r.status_code} answer (Content-Type {r.headers.get('Content-Type', 'none')!r})"


def _stow_results(response, datasets: list, answer: str) -> list[dict]:
    """Per-instance results; an instance counts as stored only when the answer lists it in its
    ReferencedSOPSequence (an empty or foreign answer, e.g. a proxy's HTML page, stores nothing)."""
    try:
        failed = {str(item.ReferencedSOPInstanceUID): int(getattr(item, "FailureReason", 0) or 0)
                  for item in getattr(response, "FailedSOPSequence", None) or []}
        stored = {str(item.ReferencedSOPInstanceUID) for item in getattr(response, "ReferencedSOPSequence", None) or []}
    except (AttributeError, TypeError, ValueError) as exc:
        raise Refused(f"{answer} is not a well-formed DICOMweb store response ({type(exc).__name__})") from exc
    results, missing = [], []
    for ds in datasets:
        uid = str(ds.SOPInstanceUID)
        if uid in failed:
            results.append({"sop_instance_uid": uid, "status": "failed", "failure_reason": hex(failed[uid])})
        elif uid in stored:
            results.append({"sop_instance_uid": uid, "status": "stored"})
        else:
            missing.append(uid)
    if failed:
        raise Refused(f"the PACS rejected {len(failed)} instance(s): "
                      + ", ".join(f"{u} (0x{r:04X})" for u, r in failed.items()))
    if missing:
        raise Refused(f"{answer} does not list {len(missing)} sent instance(s) as stored (e.g. {missing[0]}); "
                      "check that spineseg.delivery.stow.url (SPINESEG_STOW_URL) is the PACS's DICOMweb root")
    return results


# --- C-STORE ----------------------------------------------------------------------------------
def _cstore_once(dest: CStoreDestination, datasets: list, attempt: Attempt) -> list[dict]:
    from pynetdicom import AE, evt

    ae = AE(ae_title=dest.calling_aet)
    timeout = max(0.1, min(dest.timeout, attempt.remaining()))
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    tls = None
    if dest.tls:
        ctx = ssl.create_default_context(cafile=dest.ca_bundle)
        tls = (ctx, dest.host)
    rejection: dict = {}

    def on_acse(event):                 # keep A-ASSOCIATE-RJ's result: 1 permanent, 2 transient
        if getattr(event.primitive, "result", None) in (0x01, 0x02):
            rejection["result"] = event.primitive.result
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.called_aet, tls_args=tls,
                         evt_handlers=[(evt.EVT_ACSE_RECV, on_acse)])
    attempt.on_cancel(lambda: assoc.abort())
    if not assoc.is_established:
        if assoc.is_rejected and rejection.get("result") == 0x02:
            raise Transient(f"{dest.name} rejected the association for now (transient: busy or over its limit)")
        if assoc.is_rejected:
            raise Refused(f"association rejected by {dest.name} (permanent); check the AE titles")
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            raise Refused(f"{dest.name} accepts none of the SOP classes sent (presentation contexts rejected); "
                          "configure the PACS to store DICOM SEG")
        raise Transient(f"cannot associate with {dest.name}")
    results = []
    try:
        for ds in datasets:
            accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
            if (ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) not in accepted:
                raise Refused(f"{dest.name} does not accept {ds.SOPClassUID} in {ds.file_meta.TransferSyntaxUID} "
                              "(presentation context rejected); configure the PACS to store DICOM SEG")
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in OK_STATUSES:
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
    """Send ``files`` to ``dest``; return a report entry. Never raises: whatever goes wrong (a read
    error, a library's unexpected exception) is a failed entry with a reason free of secrets.

    Each attempt ends by ``dest.timeout`` and the whole delivery by ``policy.total_seconds``, both as
    hard deadlines (see :mod:`spineseg.delivery.deadline`)."""
    send = _stow_once if dest.kind == "stow-rs" else _cstore_once
    started = time.monotonic()
    end = started + policy.total_seconds
    attempts, reason, entry = 0, "", None
    delays = policy.delays()
    try:
        datasets = [pydicom.dcmread(f) for f in files]
    except Exception as exc:
        entry, reason = {"status": "failed", "retryable": False}, f"cannot read the SEG to send ({type(exc).__name__})"
    while entry is None:
        attempts += 1
        attempt = Attempt(min(time.monotonic() + dest.timeout, end))
        try:
            instances = run_before(attempt, lambda: send(dest, datasets, attempt))
            entry = {"status": "delivered", "instances": instances}
            break
        except Refused as exc:
            reason = str(exc)
            entry = {"status": "failed", "retryable": False}
            break
        except Transient as exc:
            reason = str(exc)
        except DeadlinePassed:
            bound = f"the {dest.timeout:g} s attempt timeout" if attempt.deadline < end else \
                f"the {policy.total_seconds:g} s delivery bound"
            reason = f"no complete answer from {dest.name} within {bound}"
        except SpineSegError:      # ours, e.g. INTERRUPTED by a signal: not a fault of this destination
            raise
        except Exception as exc:   # a library fault is a delivery failure, not a crash
            reason = f"unexpected {type(exc).__name__} sending to {dest.name}: {exc}"
            entry = {"status": "failed", "retryable": False}
            break
        wait = next(delays)
        if attempts >= policy.max_attempts or time.monotonic() + wait >= end:
            entry = {"status": "failed", "retryable": True}
            break
        log.warning("delivery to %s: %s; retry %d in %.1f s", dest.name, scrub(reason, dest), attempts, wait)
        sleep(wait)
    entry.update({"destination": dest.name, "kind": dest.kind, "attempts": attempts,
                  "seconds": round(time.monotonic() - started, 2), "files": [Path(f).name for f in files]})
    if entry["status"] == "failed":
        entry["reason"] = scrub(reason, dest)
        log.error("delivery to %s failed after %d attempt(s): %s", dest.name, attempts, entry["reason"])
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
