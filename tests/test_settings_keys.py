"""Every key of app.yaml's spineseg section is one the app reads, and a misspelt key anywhere is BAD_SETTING
naming it and the nearest valid key (it was silently ignored at the top level and under delivery.stow/cstore)."""
import pytest
import yaml

from conftest import ROOT
from spineseg.errors import SpineSegError
from spineseg.settings import AppConfig, check_known_keys, known_keys


def keys_of(mapping: dict, where: str = "spineseg") -> set[str]:
    out = set()
    for key, value in mapping.items():
        out.add(f"{where}.{key}")
        if isinstance(value, dict):
            out |= keys_of(value, f"{where}.{key}")
    return out


def test_app_yaml_holds_only_known_keys():
    section = yaml.safe_load((ROOT / "app.yaml").read_text())["spineseg"]
    check_known_keys(section)
    # and it shows every setting that is not a credential or a TLS option (those come from the environment)
    environment_only = {"user", "password", "token", "ca_bundle", "verify_tls", "tls"}
    missing = {k for k in keys_of(known_keys()) if k.rsplit(".", 1)[1] not in environment_only} - keys_of(section)
    assert missing == set()


@pytest.mark.parametrize("settings,named,suggested", [
    ({"devcie": "cuda"}, "spineseg.devcie", "spineseg.device"),
    ({"delivery": {"stow": {"urll": "http://x"}}}, "spineseg.delivery.stow.urll", "spineseg.delivery.stow.url"),
    ({"delivery": {"cstore": {"calling_ae": "X"}}}, "spineseg.delivery.cstore.calling_ae",
     "spineseg.delivery.cstore.calling_aet"),
    ({"delivery": {"retry": {"max_attempt": 3}}}, "spineseg.delivery.retry.max_attempt",
     "spineseg.delivery.retry.max_attempts"),
    ({"seg": {"segmentation_typ": "BINARY"}}, "spineseg.seg.segmentation_typ", "spineseg.seg.segmentation_type"),
    ({"outputs": {"review_images": False}}, "spineseg.outputs.review_images", "spineseg.outputs.review_image"),
])
def test_a_misspelt_key_is_a_bad_setting_with_the_nearest_valid_key(tmp_path, settings, named, suggested):
    with pytest.raises(SpineSegError) as err:
        AppConfig.from_settings(tmp_path, tmp_path / "out", None, settings, env={})
    assert err.value.code == "BAD_SETTING"
    assert f"unknown setting {named} " in err.value.message and f"did you mean {suggested}?" in err.value.message


def test_a_key_like_no_other_lists_the_valid_ones(tmp_path):
    with pytest.raises(SpineSegError) as err:
        AppConfig.from_settings(tmp_path, tmp_path / "out", None, {"delivery": {"ftp": {}}}, env={})
    assert "valid keys there: cstore, retry, stow" in err.value.message


def test_messages_name_keys_that_exist():
    """The readers' messages name app.yaml keys by their real paths (they once said spineseg.delivery.send.stow
    and spineseg.input.selection)."""
    known = keys_of(known_keys())
    text = "\n".join(p.read_text() for p in (ROOT / "spineseg").rglob("*.py"))
    import re
    named = set(re.findall(r"spineseg(?:\.[a-z_]+)+", text))
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "spineseg").rglob("*.py")}
    modules |= {m.rsplit(".", 1)[0] for m in modules}
    setting_like = {n for n in named if n not in modules and not any(n.startswith(m + ".") for m in modules)}
    assert setting_like <= known, sorted(setting_like - known)
