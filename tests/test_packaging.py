"""Packaging: every package directory is listed in setup.cfg, and the yaml defaults are findable."""
import configparser
from pathlib import Path

import recbole_sid

REPO = Path(__file__).resolve().parents[1]


def _listed_packages():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return {p.strip() for p in cfg["options"]["packages"].split("\n") if p.strip()}


def test_every_package_is_listed_in_setup_cfg():
    found = set()
    for top in ("recbole_sid", "dataset_prep"):
        for init in (REPO / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(REPO).parts))
    missing = found - _listed_packages()
    assert not missing, f"add these packages to [options] packages in setup.cfg: {sorted(missing)}"
    assert "recbole_sid.properties" in _listed_packages()


def test_properties_found_and_complete():
    props = recbole_sid.properties_dir()
    assert (props / "overall.yaml").is_file()
    for model in recbole_sid.available_models()["recbole_sid"]:
        assert (props / "model" / f"{model}.yaml").is_file(), f"missing properties/model/{model}.yaml"
