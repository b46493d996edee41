"""Every setting of the app, read and checked in one place, before any work starts.

app.yaml's ``spineseg`` section is read first, then SPINESEG_* variables override it. Each value is
converted to its type and range here, so a bad value stops the run at once with ``BAD_SETTING``
(exit 4: the deployment, not the study, is wrong) instead of failing deep inside a stage. Secret
values (passwords, tokens, URL user info) are checked for what would break an HTTP header and are
never copied into a message: a message names the setting, not its value.
"""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from spineseg.delivery.send import CStoreDestination, RetryPolicy, StowDestination
from spineseg.errors import SpineSegError
from spineseg.inference.backends import SETTINGS as BACKEND_SETTINGS
from spineseg.outputs.seg_writer import SegSettings
from spineseg.input.selection import SelectionRules

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = REPO_ROOT / "models"
APP_YAML = REPO_ROOT / "app.yaml"
INT32_MAX = 2**31 - 1          # DICOM IS values (SeriesNumber) are signed 32-bit


# when_needed: a partner series names the levels of a series without a landmark; always: also checks (and,
# where its count is stronger, corrects) the count of a series that has its own landmarks
PARTNER_POLICIES = ("when_needed", "always")
# partner series segmented, at most, for one series without a landmark (each costs a full segmentation)
PARTNER_MAX_ATTEMPTS = 3


def bad_setting(message: str) -> SpineSegError:
    return SpineSegError("BAD_SETTING", message)


def load_settings(path: Path | None = None) -> dict:
    """The ``spineseg`` section of app.yaml (empty when the file is absent).

    Default: HOLOSCAN_CONFIG_PATH (set inside a MAP container) when it names a file, else the
    app.yaml beside the ``spineseg`` package.
    """
    import yaml
    if path is None:
        env = os.environ.get("HOLOSCAN_CONFIG_PATH")
        path = Path(env) if env and Path(env).is_file() else APP_YAML
    if not Path(path).exists():
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise bad_setting(f"cannot read the settings file {path} ({type(exc).__name__}); fix its YAML") from exc
    section = data.get("spineseg", {}) if isinstance(data, dict) else None
    if not isinstance(section, (dict, type(None))):
        raise bad_setting(f"{path}: the 'spineseg' section must be a mapping")
    return section or {}


# --- typed readers: each names the setting, never a secret value -----------------------------------
def to_int(name: str, value, lo: int, hi: int) -> int:
    try:
        number = float(value)
        if not number.is_integer():
            raise ValueError
        out = int(number)
    except (TypeError, ValueError, OverflowError):
        raise bad_setting(f"{name}={value!r} is not an integer") from None
    if not lo <= out <= hi:
        raise bad_setting(f"{name}={out} is outside {lo}..{hi}")
    return out


def to_float(name: str, value, lo: float, hi: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise bad_setting(f"{name}={value!r} is not a number") from None
    if not math.isfinite(out) or not lo <= out <= hi:
        raise bad_setting(f"{name}={value!r} must be a finite number in {lo}..{hi}")
    return out


def to_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise bad_setting(f"{name}={value!r} is not true/false")


def to_text(name: str, value, *, secret: bool = False, max_len: int = 4096) -> str:
    """A string without control characters: a newline in a header value breaks (or forges) the
    request, and requests' error then quotes the value, secret included."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise bad_setting(f"{name} must be text")
    text = str(value)
    what = name if secret else f"{name}={text[:80]!r}"
    bad = [i for i, c in enumerate(text) if ord(c) < 0x20 or ord(c) == 0x7F]
    if bad:
        raise bad_setting(f"{what} contains a control character (position {bad[0] + 1}, e.g. a trailing "
                          "newline from a secret file); remove it")
    if secret:
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            raise bad_setting(f"{name} contains characters an HTTP header cannot carry") from None
    if len(text) > max_len:
        raise bad_setting(f"{name} is longer than {max_len} characters")
    return text


def to_choice(name: str, value, choices: tuple[str, ...]) -> str:
    """``value`` as one of ``choices`` (compared in lower case)."""
    text = to_text(name, value).lower()
    if text not in choices:
        raise bad_setting(f"{name}={text!r} must be one of {', '.join(choices)}")
    return text


def to_aet(name: str, value) -> str:
    text = to_text(name, value).strip()
    if not 1 <= len(text) <= 16 or "\\" in text:
        raise bad_setting(f"{name}={text!r} is not a DICOM AE title (1-16 characters, no backslash)")
    return text


def split_url(name: str, url) -> tuple[str, str | None, str | None]:
    """(URL without user info, user, password): credentials in a URL move into the auth settings,
    so that nothing that logs or reports the URL can show them."""
    text = to_text(name, url, secret=True)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_setting(f"{name} must be an http:// or https:// URL with a host")
    try:
        port = parts.port
    except ValueError:
        raise bad_setting(f"{name} has an invalid port") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{port}" if port else host
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), user, password


# --- delivery --------------------------------------------------------------------------------------
STOW_ENV = (("SPINESEG_STOW_URL", "url"), ("SPINESEG_STOW_USER", "user"), ("SPINESEG_STOW_PASSWORD", "password"),
            ("SPINESEG_STOW_TOKEN", "token"), ("SPINESEG_STOW_CA_BUNDLE", "ca_bundle"),
            ("SPINESEG_STOW_VERIFY_TLS", "verify_tls"), ("SPINESEG_STOW_TIMEOUT", "timeout"))
CSTORE_ENV = (("SPINESEG_CSTORE_HOST", "host"), ("SPINESEG_CSTORE_PORT", "port"), ("SPINESEG_CSTORE_AET", "called_aet"),
              ("SPINESEG_CSTORE_CALLING_AET", "calling_aet"), ("SPINESEG_CSTORE_TLS", "tls"),
              ("SPINESEG_CSTORE_CA_BUNDLE", "ca_bundle"), ("SPINESEG_CSTORE_TIMEOUT", "timeout"))


def _section(settings: dict | None, *keys) -> dict:
    s = settings or {}
    for key in keys:
        s = s.get(key, {}) if isinstance(s, dict) else {}
    if not isinstance(s, (dict, type(None))):
        raise bad_setting(f"spineseg.{'.'.join(keys)} must be a mapping")
    return dict(s or {})


def _merged(settings, keys, env, table) -> dict:
    """Settings file values, then environment overrides; empty values mean 'not set'."""
    out = _section(settings, *keys)
    for var, key in table:
        if env.get(var):
            out[key] = env[var]
    return {k: v for k, v in out.items() if v not in (None, "")}


def destinations_from_settings(settings: dict | None = None, env: dict | None = None) -> list:
    """Destinations from app.yaml's ``spineseg.delivery`` section and SPINESEG_* variables (which win)."""
    env = os.environ if env is None else env
    stow = _merged(settings, ("delivery", "stow"), env, STOW_ENV)
    cstore = _merged(settings, ("delivery", "cstore"), env, CSTORE_ENV)
    out = []
    if stow.get("url"):
        url, url_user, url_password = split_url("SPINESEG_STOW_URL", stow["url"])
        user = to_text("SPINESEG_STOW_USER", stow["user"], secret=True) if "user" in stow else url_user
        password = to_text("SPINESEG_STOW_PASSWORD", stow["password"], secret=True) if "password" in stow \
            else url_password
        if user and ":" in user:
            raise bad_setting("SPINESEG_STOW_USER must not contain ':' (HTTP basic authentication)")
        token = to_text("SPINESEG_STOW_TOKEN", stow["token"], secret=True) if "token" in stow else None
        ca = to_text("SPINESEG_STOW_CA_BUNDLE", stow["ca_bundle"]) if "ca_bundle" in stow else None
        if ca and not Path(ca).is_file():
            raise bad_setting(f"SPINESEG_STOW_CA_BUNDLE={ca!r} is not a file")
        out.append(StowDestination(
            url=url, user=user, password=password, token=token, ca_bundle=ca,
            verify_tls=to_bool("SPINESEG_STOW_VERIFY_TLS", stow.get("verify_tls", True)),
            timeout=to_float("spineseg.delivery.stow.timeout (SPINESEG_STOW_TIMEOUT)", stow.get("timeout", 30.0), 0.1, 3600)))
    if cstore.get("host"):
        host = to_text("SPINESEG_CSTORE_HOST", cstore["host"], max_len=253)
        ca = to_text("SPINESEG_CSTORE_CA_BUNDLE", cstore["ca_bundle"]) if "ca_bundle" in cstore else None
        out.append(CStoreDestination(
            host=host, port=to_int("SPINESEG_CSTORE_PORT", cstore.get("port", 104), 1, 65535),
            called_aet=to_aet("SPINESEG_CSTORE_AET", cstore.get("called_aet", "ANY-SCP")),
            calling_aet=to_aet("SPINESEG_CSTORE_CALLING_AET", cstore.get("calling_aet", "SPINESEG")),
            tls=to_bool("SPINESEG_CSTORE_TLS", cstore.get("tls", False)), ca_bundle=ca,
            timeout=to_float("spineseg.delivery.cstore.timeout (SPINESEG_CSTORE_TIMEOUT)", cstore.get("timeout", 30.0), 0.1, 3600)))
    return out


RETRY_ENV = (("SPINESEG_DELIVERY_MAX_ATTEMPTS", "max_attempts"), ("SPINESEG_DELIVERY_MAX_SECONDS", "total_seconds"),
             ("SPINESEG_DELIVERY_INITIAL_DELAY", "initial_delay"), ("SPINESEG_DELIVERY_MAX_DELAY", "max_delay"))


def policy_from_settings(settings: dict | None = None, env: dict | None = None) -> RetryPolicy:
    env = os.environ if env is None else env
    p = _merged(settings, ("delivery", "retry"), env, RETRY_ENV)
    unknown = set(p) - {key for _, key in RETRY_ENV}
    if unknown:
        raise bad_setting(f"unknown retry setting(s) {sorted(unknown)} in spineseg.delivery.retry")
    defaults = RetryPolicy()
    return RetryPolicy(
        max_attempts=to_int("SPINESEG_DELIVERY_MAX_ATTEMPTS", p.get("max_attempts", defaults.max_attempts), 1, 100),
        initial_delay=to_float("SPINESEG_DELIVERY_INITIAL_DELAY", p.get("initial_delay", defaults.initial_delay),
                               0, 3600),
        max_delay=to_float("SPINESEG_DELIVERY_MAX_DELAY", p.get("max_delay", defaults.max_delay), 0, 3600),
        total_seconds=to_float("SPINESEG_DELIVERY_MAX_SECONDS", p.get("total_seconds", defaults.total_seconds),
                               0.1, 86400))


# --- the app ---------------------------------------------------------------------------------------
def _rules_text(value: str) -> str:
    value = value.strip()
    if value.startswith("{"):
        return value
    try:
        return Path(value).read_text()
    except OSError as exc:
        raise bad_setting(f"SPINESEG_SELECTION_RULES is not JSON and not a readable file ({exc.strerror})") from exc


@dataclass
class OutputSettings:
    """Which results beside the SEG a run writes and delivers (each on by default)."""

    review_image: bool = True          # Secondary Capture + PNG of the mid-sagittal plane with level tags
    measurements: bool = True          # per-level measurements: DICOM SR (TID 1500) + JSON


OUTPUTS_ENV = (("SPINESEG_REVIEW_IMAGE", "review_image"), ("SPINESEG_MEASUREMENTS", "measurements"))


def known_keys() -> dict:
    """Every key app.yaml's ``spineseg`` section may hold: a nested dict (a section) or None (a value)."""
    keys = dict.fromkeys
    return {
        **keys(("device", "backend", "partner", "partner_max_attempts", "model_release", "max_voxels")),
        "seg": keys(f.name for f in fields(SegSettings)),
        "selection": keys(f.name for f in fields(SelectionRules)),
        "outputs": keys(key for _, key in OUTPUTS_ENV),
        "delivery": {"stow": keys(key for _, key in STOW_ENV), "cstore": keys(key for _, key in CSTORE_ENV),
                     "retry": keys(key for _, key in RETRY_ENV)},
    }


def check_known_keys(settings: dict | None, known: dict | None = None, where: str = "spineseg") -> None:
    """BAD_SETTING for a key app.yaml's ``spineseg`` section does not define, at any depth, naming the key as
    written and the nearest valid one: a misspelt key (``devcie: cuda``) would otherwise be silently ignored."""
    known = known_keys() if known is None else known
    for key, value in (settings or {}).items():
        if key not in known:
            near = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
            hint = f"; did you mean {where}.{near[0]}?" if near else f"; valid keys there: {', '.join(sorted(known))}"
            raise bad_setting(f"unknown setting {where}.{key} in app.yaml{hint}")
        if isinstance(known[key], dict) and isinstance(value, dict):
            check_known_keys(value, known[key], f"{where}.{key}")


def outputs_from_settings(settings: dict | None = None, env: dict | None = None) -> OutputSettings:
    env = os.environ if env is None else env
    o = _merged(settings, ("outputs",), env, OUTPUTS_ENV)
    unknown = set(o) - {key for _, key in OUTPUTS_ENV}
    if unknown:
        raise bad_setting(f"unknown setting(s) {sorted(unknown)} in spineseg.outputs")
    return OutputSettings(**{key: to_bool(var, o[key]) for var, key in OUTPUTS_ENV if key in o})


@dataclass
class AppConfig:
    input_dir: Path
    output_dir: Path
    models_dir: Path = DEFAULT_MODELS
    device: str = "auto"                       # auto | cpu | cuda
    model_release: str = "auto"                # auto (newest installed release, else bundled) | direct | rYYYYMMDD
    backend: str = "auto"                      # auto | torch | openvino | openvino-bf16 (spineseg.inference.backends)
    partner: str = "when_needed"               # when_needed | always: a partner series names or checks the count
    partner_max_attempts: int = PARTNER_MAX_ATTEMPTS   # partner series tried for one series without a landmark
    max_voxels: int = 48_000_000
    seg: SegSettings = field(default_factory=SegSettings)
    selection: SelectionRules = field(default_factory=SelectionRules)
    destinations: list = field(default_factory=list)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    outputs: OutputSettings = field(default_factory=OutputSettings)

    @classmethod
    def from_settings(cls, input_dir: Path, output_dir: Path, models_dir: Path | None,
                      settings: dict | None = None, env: dict | None = None) -> "AppConfig":
        """Settings from app.yaml's ``spineseg`` section, then SPINESEG_* environment overrides."""
        check_known_keys(settings)
        s = dict(settings or {})
        env = os.environ if env is None else env
        seg, sel = _section(s, "seg"), _section(s, "selection")
        for var, target, key in (("SPINESEG_DEVICE", s, "device"), ("SPINESEG_MODEL_RELEASE", s, "model_release"),
                                 ("SPINESEG_BACKEND", s, "backend"), ("SPINESEG_PARTNER", s, "partner"),
                                 ("SPINESEG_PARTNER_MAX_ATTEMPTS", s, "partner_max_attempts"),
                                 ("SPINESEG_MAX_VOXELS", s, "max_voxels"),
                                 ("SPINESEG_SEG_TYPE", seg, "segmentation_type"),
                                 ("SPINESEG_SEG_COMPRESSION", seg, "compression"),
                                 ("SPINESEG_SERIES_NUMBER", seg, "series_number"),
                                 ("SPINESEG_ALL_SERIES", sel, "all_eligible")):
            if env.get(var):
                target[key] = env[var]
        if env.get("SPINESEG_SELECTION_RULES"):     # JSON text, or the path of a JSON file holding it
            sel["rules"] = _rules_text(env["SPINESEG_SELECTION_RULES"])
        seg.update({k: str(seg[k]).upper() if k == "segmentation_type" else str(seg[k]).lower()
                    for k in ("segmentation_type", "compression") if seg.get(k) is not None})
        if seg.get("series_number") is not None:
            seg["series_number"] = to_int("SPINESEG_SERIES_NUMBER", seg["series_number"], 0, INT32_MAX)
        if "all_eligible" in sel:
            sel["all_eligible"] = to_bool("SPINESEG_ALL_SERIES", sel["all_eligible"])
        if "min_slices" in sel:
            sel["min_slices"] = to_int("spineseg.selection.min_slices", sel["min_slices"], 2, 100_000)
        device = to_text("SPINESEG_DEVICE", s.get("device", "auto")).lower()
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise bad_setting(f"SPINESEG_DEVICE={device!r} must be auto, cpu or cuda")
        backend = to_choice("SPINESEG_BACKEND", s.get("backend", "auto"), BACKEND_SETTINGS)
        partner = to_choice("SPINESEG_PARTNER", s.get("partner", "when_needed"), PARTNER_POLICIES)
        try:
            seg_settings, selection = SegSettings(**seg), SelectionRules(**sel)
        except TypeError as exc:
            raise bad_setting(f"unknown setting in spineseg.seg or spineseg.selection ({exc})") from None
        cfg = cls(Path(input_dir), Path(output_dir), Path(models_dir) if models_dir else DEFAULT_MODELS,
                  device=device, backend=backend, partner=partner,
                  partner_max_attempts=to_int("SPINESEG_PARTNER_MAX_ATTEMPTS",
                                              s.get("partner_max_attempts", PARTNER_MAX_ATTEMPTS), 1, 100),
                  model_release=to_text("SPINESEG_MODEL_RELEASE", s.get("model_release", "auto")),
                  max_voxels=to_int("SPINESEG_MAX_VOXELS", s.get("max_voxels", 48_000_000), 1, 10**11),
                  seg=seg_settings, selection=selection)
        cfg.destinations = destinations_from_settings(s, env)
        cfg.retry = policy_from_settings(s, env)
        cfg.outputs = outputs_from_settings(s, env)
        cfg.seg.validate()
        return cfg
