"""spineseg.settings.SETTINGS, the one table of settings, against app.yaml both ways, against the dataclasses'
defaults, and against its messages: every bad value, from app.yaml or from its variable, is refused naming the
key that exists and, only when it came from the environment, the variable (fast tier: no app run)."""
from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from conftest import ROOT
from spineseg.delivery.send import CStoreDestination, RetryPolicy, StowDestination
from spineseg.errors import SpineSegError
from spineseg.settings import (AE_TITLE, BY_KEY, DEVICE, FILE, HTTP_USER, SETTINGS, AppConfig, Choice, Flag,
                               Number, Patterns, Rules, Setting, Text, Url, destinations_from_settings, known_keys,
                               policy_from_settings, settings_table_markdown)

APP_YAML = yaml.safe_load((ROOT / "app.yaml").read_text())["spineseg"]
VARIABLE = re.compile(r"SPINESEG_[A-Z0-9_]+")

# one value each kind refuses, given as app.yaml or a variable would give it
BAD = {Number: "lots", Flag: "perhaps", Text: "a\nb", Choice: "nonsense", Url: "ftp://host/x",
       Patterns: "not a mapping", Rules: "{not json"}
BAD_CHECKED = {DEVICE: "gpu9", AE_TITLE: "A" * 17, HTTP_USER: "a:b", FILE: "/nonexistent/ca.pem"}


def bad(row: Setting) -> str:
    return BAD_CHECKED[row.kind] if row.kind in BAD_CHECKED else BAD[type(row.kind)]


def app_yaml_leaves(node: dict, prefix: str = "") -> dict[str, Any]:
    """{table key: value} of app.yaml's section: a mapping is a section unless the table has a row for it
    (selection.require holds a mapping as its value)."""
    out = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in BY_KEY:
            out |= app_yaml_leaves(value, f"{path}.")
        else:
            out[path] = value
    return out


def nested(key: str, value: Any) -> dict:
    """app.yaml's section holding only ``value`` at ``key``."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def test_every_app_yaml_key_is_a_row():
    assert sorted(set(app_yaml_leaves(APP_YAML)) - set(BY_KEY)) == []


def test_every_row_is_in_app_yaml_unless_given_as_a_variable():
    listed = set(app_yaml_leaves(APP_YAML))
    assert sorted(r.key for r in SETTINGS if r.in_app_yaml and r.key not in listed) == []
    assert sorted(r.key for r in SETTINGS if not r.in_app_yaml and r.key in listed) == []
    assert all(r.env for r in SETTINGS if not r.in_app_yaml), "a setting missing from app.yaml needs a variable"


@pytest.mark.parametrize("key", sorted(app_yaml_leaves(APP_YAML)))
def test_app_yaml_shows_each_default(key):
    """app.yaml's value is the row's default, or null (the default applies): the file documents what runs."""
    row, value = BY_KEY[key], app_yaml_leaves(APP_YAML)[key]
    read = row.read(nested(key, value), {})
    assert value is None or (read == row.default and type(read) is type(row.default))


def test_app_yaml_comments_name_the_variables():
    """Each variable is named in app.yaml beside its key or its section (as SPINESEG_STOW_URL, _USER, ...)."""
    text = (ROOT / "app.yaml").read_text()
    named = set(VARIABLE.findall(text))
    for prefix, tails in re.findall(r"(SPINESEG_[A-Z]+)_[A-Z_]+((?:, _[A-Z_]+)+)", text):
        named |= {prefix + tail.strip(" ,") for tail in tails.split(",")}
    assert sorted(r.env for r in SETTINGS if r.env and r.in_app_yaml and r.env not in named) == []


def test_variables_and_keys_are_unique():
    assert len({r.key for r in SETTINGS}) == len(SETTINGS)
    variables = [r.env for r in SETTINGS if r.env]
    assert len(set(variables)) == len(variables) and all(VARIABLE.fullmatch(v) for v in variables)


def test_the_defaults_are_the_dataclasses_defaults(tmp_path):
    """A config built by hand (as tests and benches do) runs with the defaults the README documents."""
    assert AppConfig.from_settings(tmp_path, tmp_path, None, {}, env={}) == AppConfig(tmp_path, tmp_path)
    assert AppConfig.from_settings(tmp_path, tmp_path, None, APP_YAML, env={}) == AppConfig(tmp_path, tmp_path)
    assert policy_from_settings({}, {}) == RetryPolicy()
    env = {"SPINESEG_STOW_URL": "https://pacs.example.org/dicom-web", "SPINESEG_CSTORE_HOST": "pacs"}
    assert destinations_from_settings({}, env) == [StowDestination("https://pacs.example.org/dicom-web"),
                                                   CStoreDestination("pacs", 104, "ANY-SCP")]


def refusal(tmp_path, settings: dict, env: dict) -> SpineSegError:
    with pytest.raises(SpineSegError) as err:
        AppConfig.from_settings(tmp_path, tmp_path / "out", None, settings, env=env)
    assert err.value.code in ("BAD_SETTING", "BAD_SELECTION_RULES")
    return err.value


def keys_of(tree: dict, prefix: str = "spineseg") -> set[str]:
    return {f"{prefix}.{k}" for k in tree} | {p for k, v in tree.items() if v for p in keys_of(v, f"{prefix}.{k}")}


@pytest.mark.parametrize("row", SETTINGS, ids=lambda r: r.key)
def test_a_bad_value_from_app_yaml_names_its_key_and_no_variable(tmp_path, row: Setting):
    message = refusal(tmp_path, nested(row.key, bad(row)), {}).message
    assert row.path in message and row.path in keys_of(known_keys())
    assert not VARIABLE.search(message), message


@pytest.mark.parametrize("row", [r for r in SETTINGS if r.env and not isinstance(r.kind, Patterns)],
                         ids=lambda r: r.env)
def test_a_bad_value_from_the_environment_names_its_variable_and_key(tmp_path, row: Setting):
    message = refusal(tmp_path, nested(row.key, row.default), {row.env: bad(row)}).message
    assert row.env in message and row.path in message and set(VARIABLE.findall(message)) == {row.env}


@pytest.mark.parametrize("row", [r for r in SETTINGS if r.kind.secret], ids=lambda r: r.key)
def test_a_secret_is_never_shown(tmp_path, row: Setting):
    secret = "Zz9-secret\n"
    assert "Zz9" not in refusal(tmp_path, nested(row.key, secret), {}).message
    assert "Zz9" not in refusal(tmp_path, {}, {row.env: secret}).message


def test_the_variable_wins_and_an_empty_one_is_not_set(tmp_path):
    settings = {"delivery": {"retry": {"max_attempts": 7}}}
    assert policy_from_settings(settings, {"SPINESEG_DELIVERY_MAX_ATTEMPTS": "9"}).max_attempts == 9
    assert policy_from_settings(settings, {"SPINESEG_DELIVERY_MAX_ATTEMPTS": ""}).max_attempts == 7
    assert policy_from_settings({"delivery": {"retry": {"max_attempts": None}}}, {}).max_attempts == 5


def test_a_combination_names_where_each_value_came_from(tmp_path):
    message = refusal(tmp_path, {"seg": {"compression": "rle"}}, {}).message
    assert "spineseg.seg.compression in app.yaml" in message and "spineseg.seg.segmentation_type by default" in message
    message = refusal(tmp_path, {}, {"SPINESEG_SEG_COMPRESSION": "rle", "SPINESEG_SEG_TYPE": "binary"}).message
    assert "from SPINESEG_SEG_COMPRESSION" in message and "from SPINESEG_SEG_TYPE" in message


def test_a_section_that_is_not_a_mapping_is_refused(tmp_path):
    assert "spineseg.delivery must be a mapping" in refusal(tmp_path, {"delivery": 5}, {}).message


def test_the_readme_table_is_the_table():
    """The README's settings table is what tools/docs_figures.py generates from SETTINGS, not edited by hand."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- BEGIN generated:settings (tools/docs_figures.py) -->\n")[1]
    assert block.split("<!-- END generated:settings -->")[0] == "\n".join(settings_table_markdown()) + "\n"
