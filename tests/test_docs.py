"""The docs agree with the code and the bench records (fast tier: reads files, runs nothing).

- every speed, memory and agreement figure between generated markers equals what tools/docs_figures.py makes
  of the records in bench/results/, and the README's settings table what it makes of spineseg.settings.SETTINGS;
- every SPINESEG_* variable the code reads, every app.yaml key and every error code the code raises is
  documented, the codes with the exit status their class gives;
- the README renders cleanly: no line over 200 characters outside tables and code blocks.
"""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CODE_DIRS = ("spineseg", "app", "operators", "tools")
VARIABLE = re.compile(r"SPINESEG_[A-Z0-9_]+")
CODE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")

# ALL_CAPS string constants in the code that are not error codes, and why
NOT_ERROR_CODES = {
    "XDG_CACHE_HOME": "an environment variable (the IR cache's default folder)",
    "INFERENCE_NUM_THREADS": "an OpenVINO property name",
    "INFERENCE_PRECISION_HINT": "an OpenVINO property name",
    "PERFORMANCE_HINT": "an OpenVINO property name",
    "OPTIMIZATION_CAPABILITIES": "an OpenVINO property name",
}
NOT_ERROR_PREFIXES = ("SPINESEG_", "HOLOSCAN_")     # environment variables: test_every_variable_is_documented
# the exit status each error class gives (spineseg/errors.py, spineseg/outputs/output_folder.py)
CLASS_EXIT = {"InputError": 3, "ModelError": 4, "OutputError": 4, "DeliveryError": 5, "SpineSegError": 4,
              "Interrupted": 4, "bad_setting": 4}


def figures():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "tools" / "docs_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_files(dirs=CODE_DIRS):
    for d in dirs:
        for path in sorted((ROOT / d).rglob("*")):
            if path.suffix in (".py", ".sh") and "__pycache__" not in path.parts:
                yield path


def docs_text() -> str:
    return "\n".join(p.read_text() for p in [README, *sorted((ROOT / "docs").glob("*.md"))])


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def table_rows(section: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|") and not line.startswith("|---")]


# --- figures ------------------------------------------------------------------------------------------

def test_generated_figures_equal_their_records():
    f = figures()
    stale = [str(p.relative_to(ROOT)) for p in f.doc_paths() if f.render(p.read_text()) != p.read_text()]
    assert not stale, (f"generated blocks differ from bench/results/ or spineseg.settings.SETTINGS in {stale}: "
                       "run python tools/docs_figures.py")


def test_every_generated_block_is_placed_once_or_more():
    f = figures()
    placed = {name for p in f.doc_paths() for name in f.blocks_in(p.read_text())}
    assert placed == set(f.BLOCKS), f"not placed: {set(f.BLOCKS) - placed}; unknown: {placed - set(f.BLOCKS)}"


def test_every_record_is_listed():
    """The records table names every file in bench/results/, quoted or not, so a new record cannot hide."""
    f = figures()
    listed = "\n".join(f.block_records())
    for path in (ROOT / "bench" / "results").iterdir():
        assert f"`{path.name}`" in listed


def test_a_record_without_provenance_says_so():
    f = figures()
    assert f.recorded({}) == ("not recorded", "not recorded", "not recorded")
    assert f.recorded({"recorded": {"date": "d", "commit": "c", "machine": "m"}}) == ("d", "c", "m")


# --- settings -----------------------------------------------------------------------------------------

def variables_read(dirs) -> set[str]:
    return {v for p in code_files(dirs) for v in VARIABLE.findall(p.read_text())}


def test_every_variable_is_documented():
    """Runtime variables (read in spineseg/, app/, operators/) are in the README's settings table; test hooks
    (SPINESEG_TEST_*) and the tools' build variables are documented in docs/developing.md."""
    settings = readme_section("Settings")
    developing = (ROOT / "docs" / "developing.md").read_text()
    runtime = variables_read(("spineseg", "app", "operators"))
    assert runtime, "no SPINESEG_ variable found: the scan is broken"
    hooks = {v for v in runtime if v.startswith("SPINESEG_TEST_")}
    missing = sorted(v for v in runtime - hooks if f"`{v}`" not in settings)
    assert not missing, f"not in the README's settings table: {missing}"
    missing_hooks = sorted(v for v in hooks | (variables_read(("tools",)) - runtime) if f"`{v}`" not in developing)
    assert not missing_hooks, f"test hooks / build variables not in docs/developing.md: {missing_hooks}"


def test_every_app_yaml_key_is_documented():
    from spineseg.settings import known_keys

    def paths(tree, prefix=""):
        for key, sub in tree.items():
            yield from paths(sub, f"{prefix}{key}.") if isinstance(sub, dict) else [f"{prefix}{key}"]

    documented = {c for row in table_rows(readme_section("Settings")) for c in re.findall(r"`([a-z_.]+)`", row[0])}
    missing = sorted(set(paths(known_keys())) - documented)
    assert not missing, f"app.yaml keys not in the README's settings table: {missing}"


# --- error codes --------------------------------------------------------------------------------------

def raised_codes() -> dict[str, int | None]:
    """Every error code in the code: {code: exit status its class gives, or None where a variable carries it}."""
    codes: dict[str, int | None] = {}
    for path in code_files():
        text = path.read_text()
        if path.suffix == ".py":
            tree = ast.parse(text)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.fullmatch(node.value) \
                        and not node.value.startswith(NOT_ERROR_PREFIXES) and node.value not in NOT_ERROR_CODES:
                    codes.setdefault(node.value, None)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                    name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                    value = node.args[0].value
                    if name in CLASS_EXIT and isinstance(value, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", value):
                        codes[value] = CLASS_EXIT[name]     # a one-word code too (INTERRUPTED)
                if isinstance(node, ast.FunctionDef) and node.name == "bad_setting":
                    codes["BAD_SETTING"] = 4
        codes.update({c: codes.get(c) for c in re.findall(r"error: ([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+):", text)})
    return codes


def test_the_code_scan_finds_the_codes():
    codes = raised_codes()
    assert {"NO_DICOM", "BAD_SETTING", "DISK_FULL", "MIXED_PATIENTS", "INTERRUPTED", "WEIGHTS_DOWNLOAD"} <= set(codes)
    assert codes["NO_DICOM"] == 3 and codes["DELIVERY_FAILED"] == 5 and codes["MODEL_MALFORMED"] == 4


def test_every_error_code_is_in_the_troubleshooting_table_with_its_exit_status():
    rows = table_rows(readme_section("Troubleshooting by error code"))
    documented = {code: row[1] for row in rows[1:] for code in re.findall(r"`([A-Z_0-9]+)`", row[0])}
    codes = raised_codes()
    missing = sorted(set(codes) - set(documented))
    assert not missing, f"error codes not in the README's troubleshooting table: {missing}"
    wrong = {c: (documented[c], e) for c, e in codes.items() if e is not None and documented[c] != str(e)}
    assert not wrong, f"exit status documented vs the code's: {wrong}"
    unknown = sorted(set(documented) - set(codes))
    assert not unknown, f"codes documented that the code no longer has: {unknown}"


# --- the README renders ----------------------------------------------------------------------------------

def test_readme_lines_fit():
    long, fence = [], False
    for n, line in enumerate(README.read_text().splitlines(), 1):
        fence ^= line.lstrip().startswith("```")
        if not fence and not line.startswith("|") and len(line) > 200:
            long.append(n)
    assert not long, f"README lines over 200 characters outside tables: {long}"


@pytest.mark.parametrize("link", sorted(set(re.findall(r"\]\(((?:docs/)?[\w./-]+\.(?:md|png))(?:#[\w-]+)?\)",
                                                       README.read_text()))))
def test_readme_links_resolve(link):
    assert (ROOT / link).exists(), link
