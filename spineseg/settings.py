"""Every setting of the app, declared once in ``SETTINGS`` and read, checked and documented from that table.

Each row names a key of app.yaml's ``spineseg`` section, the SPINESEG_* variable that overrides it (if any),
the kind of value it takes (type and bounds), its default and what it means. The table drives:

- reading: a variable that is set and not empty wins over app.yaml, which wins over the default; a key set to
  null or "" in app.yaml counts as not set;
- checking: every value is converted to its kind before any work starts, so a bad value stops the run at once
  with ``BAD_SETTING`` (exit 4: the deployment, not the study, is wrong) instead of failing deep inside a stage;
  a key the table does not define, at any depth, is refused with the nearest valid key (``check_known_keys``);
- messages: a message names the setting as the value was given, the variable (and the app.yaml key it
  overrides) for a value from the environment, the app.yaml key for a value from the file. Secret values
  (passwords, tokens, URL user info) are checked for what would break an HTTP header and never copied into a
  message;
- the README's settings table (``settings_table_markdown``, placed by tools/docs_figures.py).
"""
from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from spineseg.delivery.send import CStoreDestination, RetryPolicy, StowDestination
from spineseg.errors import SpineSegError
from spineseg.inference.backends import SETTINGS as BACKEND_SETTINGS
from spineseg.input.selection import SelectionRules, parse_rules
from spineseg.outputs.seg_writer import COMPRESSION, SEGMENTATION_TYPES, SegSettings

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


# --- kinds of value: each converts a raw value (YAML scalar or variable text) or raises Invalid ------------
class Invalid(ValueError):
    """What is wrong with a value, without the setting's name: the row adds the name and where the value came
    from, so that every message says it the same way."""


class Kind(Protocol):
    secret: bool                                  # the value is never shown in a message

    def parse(self, value: Any) -> Any: ...

    def values(self) -> str: ...                  # what it accepts, for the README's table


@dataclass(frozen=True)
class Number:
    """A finite number in ``lo``..``hi``; a whole one (returned as int) where ``integer``."""

    lo: float
    hi: float
    unit: str = ""
    integer: bool = False
    secret: bool = False

    def parse(self, value: Any) -> float | int:
        try:
            out = float(value)
        except (TypeError, ValueError, OverflowError):
            out = math.nan
        if self.integer:
            if not out.is_integer():
                raise Invalid("is not an integer")
            if not self.lo <= int(out) <= self.hi:
                raise Invalid(f"is outside {self.lo}..{self.hi}")
            return int(out)
        if math.isnan(out):
            raise Invalid("is not a number")
        if not math.isfinite(out) or not self.lo <= out <= self.hi:
            raise Invalid(f"must be a finite number in {self.lo:g}..{self.hi:g}")
        return out

    def values(self) -> str:
        return f"integer {self.lo}..{self.hi}" if self.integer else f"{self.lo:g}..{self.hi:g}{self.unit}"


def Integer(lo: int, hi: int) -> Number:       # noqa: N802 (reads as a kind in the table, like Number)
    return Number(lo, hi, integer=True)


@dataclass(frozen=True)
class Flag:
    secret: bool = False

    def parse(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise Invalid("is not true/false")

    def values(self) -> str:
        return "`true`, `false` (also 1/0, yes/no, on/off)"


@dataclass(frozen=True)
class Text:
    """A string without control characters: a newline in a header value breaks (or forges) the request, and
    requests' error then quotes the value, secret included. A secret must also fit an HTTP header (latin-1)."""

    secret: bool = False
    max_len: int = 4096
    what: str = "text"

    def parse(self, value: Any) -> str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise Invalid("must be text")
        text = str(value)
        bad = [i for i, c in enumerate(text) if ord(c) < 0x20 or ord(c) == 0x7F]
        if bad:
            raise Invalid(f"contains a control character (position {bad[0] + 1}, e.g. a trailing newline from a "
                          "secret file); remove it")
        if self.secret:
            try:
                text.encode("latin-1")
            except UnicodeEncodeError:
                raise Invalid("contains characters an HTTP header cannot carry") from None
        if len(text) > self.max_len:
            raise Invalid(f"is longer than {self.max_len} characters")
        return text

    def values(self) -> str:
        return self.what + (" (secret: never logged)" if self.secret else "")


TEXT = Text()


@dataclass(frozen=True)
class Choice:
    """One of ``choices``, compared in lower case (upper case for DICOM's enumerated values)."""

    choices: tuple[str, ...]
    upper: bool = False
    secret: bool = False

    def parse(self, value: Any) -> str:
        text = TEXT.parse(value)
        text = text.upper() if self.upper else text.lower()
        if text not in self.choices:
            raise Invalid(f"must be one of {', '.join(self.choices)}")
        return text

    def values(self) -> str:
        return ", ".join(f"`{c}`" for c in self.choices)


@dataclass(frozen=True)
class Checked:
    """Text that must pass ``ok`` (after ``normal``, e.g. lower case), else ``problem`` says what is wrong."""

    ok: Callable[[str], bool]
    problem: str
    what: str                                     # what it accepts, for the README's table
    normal: Callable[[str], str] = str
    secret: bool = False

    def parse(self, value: Any) -> str:
        text = self.normal(Text(secret=self.secret).parse(value))
        if not self.ok(text):
            raise Invalid(self.problem)
        return text

    def values(self) -> str:
        return self.what + (" (secret: never logged)" if self.secret else "")


DEVICE = Checked(lambda t: t in ("auto", "cpu", "cuda") or t.startswith("cuda:"),
                 "must be auto, cpu or cuda (or cuda:N)", "`auto`, `cpu`, `cuda`, `cuda:N`", normal=str.lower)
AE_TITLE = Checked(lambda t: 1 <= len(t) <= 16 and "\\" not in t,
                   "is not a DICOM AE title (1-16 characters, no backslash)", "AE title, 1-16 characters",
                   normal=str.strip)
# an HTTP basic user name: ':' would end it inside the credentials
HTTP_USER = Checked(lambda t: ":" not in t, "must not contain ':' (HTTP basic authentication)", "text, no ':'",
                    secret=True)
FILE = Checked(lambda t: Path(t).is_file(), "is not a file", "path of a file")


@dataclass(frozen=True)
class Url:
    """(URL without user info, user, password): credentials in a URL move into the auth settings, so that
    nothing that logs or reports the URL can show them."""

    secret: bool = True

    def parse(self, value: Any) -> tuple[str, str | None, str | None]:
        parts = urlsplit(Text(secret=True).parse(value))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid("must be an http:// or https:// URL with a host")
        try:
            port = parts.port
        except ValueError:
            raise Invalid("has an invalid port") from None
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = f"{host}:{port}" if port else host
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), user, password

    def values(self) -> str:
        return "DICOMweb base URL, http(s); user info in it moves to user/password, never logged"


@dataclass(frozen=True)
class Patterns:
    """{DICOM keyword: regular expression}, each compiled here so that a typo stops the run before the scan."""

    secret: bool = False

    def parse(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise Invalid("must be a mapping {DICOM keyword: regex}")
        for key, pattern in value.items():
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise Invalid(f"holds {key}: {pattern!r}, not a regular expression ({exc})") from None
        return dict(value)

    def values(self) -> str:
        return "{DICOM keyword: regex}"


@dataclass(frozen=True)
class Rules:
    """MONAI Deploy selector rules: a mapping, its JSON text, or the path of a file holding that text.
    ``parse_rules`` names the selection and condition at fault (BAD_SELECTION_RULES)."""

    secret: bool = False

    def parse(self, value: Any) -> dict | None:
        if isinstance(value, str) and not value.strip().startswith("{"):
            try:
                value = Path(value.strip()).read_text()
            except OSError as exc:
                raise Invalid(f"is not JSON and not a readable file ({exc.strerror})") from None
        return parse_rules(value)

    def values(self) -> str:
        return "MONAI Deploy selector rules, JSON text or a file ([docs/input.md](docs/input.md))"


# --- the table -------------------------------------------------------------------------------------------
FROM_APP_YAML = "in app.yaml"


@dataclass(frozen=True)
class Setting:
    key: str                    # path under app.yaml's spineseg section, levels joined by dots
    env: str | None             # the SPINESEG_* variable that overrides it; None: app.yaml only
    kind: Kind
    default: Any
    meaning: str                # one line, for the README's table
    in_app_yaml: bool = True    # app.yaml lists it (credentials and TLS options are best given as variables)

    @property
    def path(self) -> str:
        """The key as messages and the README name it."""
        return f"spineseg.{self.key}"

    def origin(self, settings: Mapping | None, env: Mapping[str, str]) -> str:
        """Where the value in force comes from, in words naming the variable or key."""
        if self.env and env.get(self.env):
            return f"{self.path} from {self.env}"
        return f"{self.path} {FROM_APP_YAML if yaml_value(settings, self.key) not in (None, '') else 'by default'}"

    def read(self, settings: Mapping | None, env: Mapping[str, str]) -> Any:
        """The value in force: the variable when set and not empty, else app.yaml's, else the default."""
        raw = yaml_value(settings, self.key)        # walked even when overridden: a broken section is refused
        if self.env and env.get(self.env):
            return self.parse(env[self.env], self.env, f"environment variable; app.yaml key {self.path}")
        if raw is None or raw == "":
            return self.default
        return self.parse(raw, self.path, FROM_APP_YAML)

    def parse(self, value: Any, name: str, origin: str) -> Any:
        """``value`` converted to the row's kind; a message names ``name`` and says where the value came from."""
        try:
            return self.kind.parse(value)
        except Invalid as exc:
            shown = name if self.kind.secret else f"{name}={value[:80] if isinstance(value, str) else value!r}"
            raise bad_setting(f"{shown} {exc} ({origin})") from None
        except SpineSegError as exc:               # the selection rules' own checks keep their code
            raise SpineSegError(exc.code, f"{exc.message} ({name}, {origin})") from None


def yaml_section(settings: Mapping | None, section: str) -> Mapping:
    """app.yaml's mapping at ``section`` ("" for the top level; empty when absent); BAD_SETTING where a section on
    the way is not a mapping."""
    node: Any = settings or {}
    parts = [part for part in section.split(".") if part]
    for depth, part in enumerate(parts, 1):
        node = node.get(part)
        if node is None:
            return {}
        if not isinstance(node, dict):
            raise bad_setting(f"spineseg.{'.'.join(parts[:depth])} must be a mapping ({FROM_APP_YAML})")
    return node


def yaml_value(settings: Mapping | None, key: str) -> Any:
    """app.yaml's value at ``key`` (None when absent)."""
    section, _, leaf = key.rpartition(".")
    return yaml_section(settings, section).get(leaf)


SECONDS = " s"
SETTINGS: tuple[Setting, ...] = (
    Setting("device", "SPINESEG_DEVICE", DEVICE, "auto", "where the networks run; `auto`: CUDA if visible"),
    Setting("backend", "SPINESEG_BACKEND", Choice(BACKEND_SETTINGS), "auto",
            "`auto`: `torch` on CUDA, `openvino` on the CPU; `torch` is the reference's exact path, "
            "`openvino-bf16` the fastest, not the reference's labels"),
    Setting("partner", "SPINESEG_PARTNER", Choice(PARTNER_POLICIES), "when_needed",
            "`when_needed`: another series (localizer, station) names a series without a landmark; "
            "`always`: it also checks (and corrects) the count of one with its own"),
    Setting("partner_max_attempts", "SPINESEG_PARTNER_MAX_ATTEMPTS", Integer(1, 100), PARTNER_MAX_ATTEMPTS,
            "partner series segmented, at most, to name the levels of one series without a landmark"),
    Setting("model_release", "SPINESEG_MODEL_RELEASE", TEXT, "auto",
            "`auto`: newest installed official release, else bundled; `direct`: bundled; or a release, e.g. "
            "`r20260730`"),
    Setting("max_voxels", "SPINESEG_MAX_VOXELS", Integer(1, 10**11), 48_000_000,
            "larger series are refused, as sent and on the 1 mm grid (~85 bytes per 1 mm voxel)"),
    Setting("seg.segmentation_type", "SPINESEG_SEG_TYPE", Choice(SEGMENTATION_TYPES, upper=True), "AUTO",
            "`AUTO`: `BINARY` if Rows x Columns is a multiple of 8, else `LABELMAP`"),
    Setting("seg.compression", "SPINESEG_SEG_COMPRESSION", Choice(tuple(COMPRESSION)), "none",
            "SEG frame compression; `rle` not with `AUTO` or `BINARY`"),
    Setting("seg.series_number", "SPINESEG_SERIES_NUMBER", Integer(0, INT32_MAX), None,
            "the SEG's SeriesNumber; none: 1000 + the source's"),
    Setting("seg.series_description", None, TEXT, "Spine segmentation (TotalSpineSeg)",
            "the SEG's SeriesDescription, after the phantom warning and the numbering tag"),
    Setting("seg.content_creator_name", None, TEXT, "SPINESEG^AI", "the SEG's ContentCreatorName"),
    Setting("seg.institution_name", None, TEXT, None, "the SEG's InstitutionName; none: not written"),
    Setting("selection.all_eligible", "SPINESEG_ALL_SERIES", Flag(), False,
            "`false`: the best series only; `true`: every eligible series (one SEG per station)"),
    Setting("selection.min_slices", None, Integer(2, 100_000), 3, "fewer images make a series ineligible"),
    Setting("selection.require", None, Patterns(), {}, "a series must match every one, e.g. "
            "`{BodyPartExamined: \"SPINE\\|LSPINE\"}`"),
    Setting("selection.exclude", None, Patterns(), {}, "a series matching any one is ruled out"),
    Setting("selection.rules", "SPINESEG_SELECTION_RULES", Rules(), None,
            "rules a series must match; none: no rules"),
    Setting("outputs.measurements", "SPINESEG_MEASUREMENTS", Flag(), True,
            "per-level measurements: DICOM SR (TID 1500) and JSON, and the SC's table image"),
    Setting("outputs.review_image", "SPINESEG_REVIEW_IMAGE", Flag(), True,
            "mid-sagittal review picture: PNG and DICOM Secondary Capture"),
    Setting("delivery.stow.url", "SPINESEG_STOW_URL", Url(), None, "DICOMweb STOW-RS destination; none: no STOW"),
    Setting("delivery.stow.user", "SPINESEG_STOW_USER", HTTP_USER, None, "HTTP basic user", in_app_yaml=False),
    Setting("delivery.stow.password", "SPINESEG_STOW_PASSWORD", Text(secret=True), None, "HTTP basic password",
            in_app_yaml=False),
    Setting("delivery.stow.token", "SPINESEG_STOW_TOKEN", Text(secret=True), None,
            "bearer token instead of user/password", in_app_yaml=False),
    Setting("delivery.stow.ca_bundle", "SPINESEG_STOW_CA_BUNDLE", FILE, None,
            "the PACS's CA file; none: the system CAs", in_app_yaml=False),
    Setting("delivery.stow.verify_tls", "SPINESEG_STOW_VERIFY_TLS", Flag(), True,
            "`false` turns TLS verification off", in_app_yaml=False),
    Setting("delivery.stow.timeout", "SPINESEG_STOW_TIMEOUT", Number(0.1, 3600, SECONDS), 30.0,
            "hard deadline of one attempt"),
    Setting("delivery.cstore.host", "SPINESEG_CSTORE_HOST", Text(max_len=253, what="host name or address"), None,
            "DIMSE C-STORE destination; none: no C-STORE"),
    Setting("delivery.cstore.port", "SPINESEG_CSTORE_PORT", Integer(1, 65535), 104, "the peer's port"),
    Setting("delivery.cstore.called_aet", "SPINESEG_CSTORE_AET", AE_TITLE, "ANY-SCP", "the peer's AE title"),
    Setting("delivery.cstore.calling_aet", "SPINESEG_CSTORE_CALLING_AET", AE_TITLE, "SPINESEG", "our AE title"),
    Setting("delivery.cstore.tls", "SPINESEG_CSTORE_TLS", Flag(), False, "DICOM TLS", in_app_yaml=False),
    # a path as given (not checked for a file, as before the table: C-STORE's TLS context opens it when sending)
    Setting("delivery.cstore.ca_bundle", "SPINESEG_CSTORE_CA_BUNDLE", Text(what="path of a file"), None,
            "the peer's CA file for DICOM TLS", in_app_yaml=False),
    Setting("delivery.cstore.timeout", "SPINESEG_CSTORE_TIMEOUT", Number(0.1, 3600, SECONDS), 30.0,
            "hard deadline of one attempt"),
    Setting("delivery.retry.max_attempts", "SPINESEG_DELIVERY_MAX_ATTEMPTS", Integer(1, 100), 5,
            "attempts per destination (connection errors, timeouts, HTTP 5xx/408/429, DIMSE out of resources)"),
    Setting("delivery.retry.initial_delay", "SPINESEG_DELIVERY_INITIAL_DELAY", Number(0, 3600, SECONDS), 1.0,
            "wait before the first retry, doubled each retry"),
    Setting("delivery.retry.max_delay", "SPINESEG_DELIVERY_MAX_DELAY", Number(0, 3600, SECONDS), 20.0,
            "longest wait between attempts"),
    Setting("delivery.retry.total_seconds", "SPINESEG_DELIVERY_MAX_SECONDS", Number(0.1, 86400, SECONDS), 120.0,
            "bound on the whole delivery to one destination"),
)
BY_KEY = {row.key: row for row in SETTINGS}

# variables read outside this module, with no app.yaml key: (variable, default, meaning), for the README
ENVIRONMENT_ONLY = (
    ("SPINESEG_OPENVINO_CACHE", "~/.cache/spine-seg/openvino",
     "folder for exported networks ([docs/performance.md](docs/performance.md))"),
    ("SPINESEG_LOG_LEVEL", "INFO", "Python log level (`--log-level`)"),
    ("SPINESEG_ENGINE", "holoscan", "`plain`: the same stages without Holoscan (`--engine`)"),
)


def known_keys() -> dict:
    """Every key app.yaml's ``spineseg`` section may hold: a nested dict (a section) or None (a value)."""
    tree: dict = {}
    for row in SETTINGS:
        *sections, leaf = row.key.split(".")
        node = tree
        for part in sections:
            node = node.setdefault(part, {})
        node[leaf] = None
    return tree


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


def read_section(settings: dict | None, env: Mapping[str, str], section: str) -> dict[str, Any]:
    """{name: value in force} of the rows directly under ``section`` ("" for the top level), after refusing
    any key that section of app.yaml holds but the table does not define."""
    known, where = known_keys(), "spineseg"
    for part in filter(None, section.split(".")):
        known, where = known[part], f"{where}.{part}"
    check_known_keys(dict(yaml_section(settings, section)), known, where)
    return {row.key.rpartition(".")[2]: row.read(settings, env) for row in SETTINGS
            if row.key.rpartition(".")[0] == section}


# --- what the settings make ----------------------------------------------------------------------------
def destinations_from_settings(settings: dict | None = None, env: Mapping[str, str] | None = None) -> list:
    """Destinations from app.yaml's ``spineseg.delivery`` section and SPINESEG_* variables (which win)."""
    env = os.environ if env is None else env
    out: list = []
    stow = read_section(settings, env, "delivery.stow")
    if stow["url"]:
        url, url_user, url_password = stow.pop("url")
        stow["user"] = url_user if stow["user"] is None else stow["user"]
        stow["password"] = url_password if stow["password"] is None else stow["password"]
        out.append(StowDestination(url=url, **stow))
    cstore = read_section(settings, env, "delivery.cstore")
    if cstore["host"]:
        out.append(CStoreDestination(**cstore))
    return out


def policy_from_settings(settings: dict | None = None, env: Mapping[str, str] | None = None) -> RetryPolicy:
    return RetryPolicy(**read_section(settings, os.environ if env is None else env, "delivery.retry"))


@dataclass
class OutputSettings:
    """Which results beside the SEG a run writes and delivers (each on by default)."""

    review_image: bool = True          # Secondary Capture + PNG of the mid-sagittal plane with level tags
    measurements: bool = True          # per-level measurements: DICOM SR (TID 1500) + JSON


def outputs_from_settings(settings: dict | None = None, env: Mapping[str, str] | None = None) -> OutputSettings:
    return OutputSettings(**read_section(settings, os.environ if env is None else env, "outputs"))


def seg_from_settings(settings: dict | None, env: Mapping[str, str]) -> SegSettings:
    """The SEG settings, their combination checked (RLE cannot code BINARY frames) naming where each came from."""
    seg = SegSettings(**read_section(settings, env, "seg"))
    try:
        seg.validate()
    except SpineSegError as exc:
        where = "; ".join(BY_KEY[k].origin(settings, env) for k in ("seg.segmentation_type", "seg.compression"))
        raise SpineSegError(exc.code, f"{exc.message} ({where})") from None
    return seg


# --- the README's table ----------------------------------------------------------------------------------
def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (str, dict)):
        return f"`{value}`"
    return str(value)


def settings_table_markdown() -> list[str]:
    """The README's settings table, one line per row of ``SETTINGS`` and of ``ENVIRONMENT_ONLY``."""
    lines = ["| app.yaml key | variable | default | values | meaning |", "|---|---|---|---|---|"]
    for row in SETTINGS:
        variable = f"`{row.env}`" if row.env else "(app.yaml only)"
        lines.append(f"| `{row.key}` | {variable} | {_shown(row.default)} | {row.kind.values()} | {row.meaning} |")
    for variable, default, meaning in ENVIRONMENT_ONLY:
        lines.append(f"| (variable only) | `{variable}` | `{default}` | | {meaning} |")
    return lines


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
                      settings: dict | None = None, env: Mapping[str, str] | None = None) -> "AppConfig":
        """Settings from app.yaml's ``spineseg`` section, then SPINESEG_* environment overrides (``SETTINGS``)."""
        check_known_keys(settings)
        env = os.environ if env is None else env
        return cls(Path(input_dir), Path(output_dir), Path(models_dir) if models_dir else DEFAULT_MODELS,
                   **read_section(settings, env, ""), seg=seg_from_settings(settings, env),
                   selection=SelectionRules(**read_section(settings, env, "selection")),
                   destinations=destinations_from_settings(settings, env), retry=policy_from_settings(settings, env),
                   outputs=outputs_from_settings(settings, env))
