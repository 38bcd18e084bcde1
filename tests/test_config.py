"""Config schema: defaults filled, unknown keys rejected, wrong types named, every key described."""

from pathlib import Path

import pytest
import yaml

from emofusion.config import REPO_ROOT, load_config, load_schema, validate_config
from emofusion.errors import ConfigError


def test_defaults_filled():
    cfg = validate_config({})
    assert cfg["corpus"]["root"] == "resources/demo"
    assert cfg["folds"] == {"k": 3, "seed": 0}


def test_repo_config_is_valid_and_complete():
    raw = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    cfg = load_config(REPO_ROOT / "config.yaml")
    assert set(raw) <= set(cfg)


@pytest.mark.parametrize(("cfg", "match"), [
    ({"corpus": {"bogus": 1}}, r"corpus: Additional properties are not allowed \('bogus'"),
    ({"nonsense": {}}, r"\(top level\): Additional properties"),
    ({"folds": {"k": "three"}}, r"folds.k: 'three' is not of type 'integer'"),
    ({"folds": {"k": -1}}, r"folds.k: -1 is less than the minimum"),
    ({"corpus": {"format": "kaldi"}}, r"corpus.format: 'kaldi' is not one of"),
])
def test_invalid_configs_name_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg)


def test_overrides_merge_per_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("folds:\n  k: 5\ncorpus:\n  root: x\n")
    cfg = load_config(path, overrides='{"folds": {"seed": 3}}')
    assert cfg["folds"] == {"k": 5, "seed": 3} and cfg["corpus"]["root"] == "x"


def test_bad_files_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("corpus: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(overrides="{nope")


def _walk(schema: dict, path: str = ""):
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}{key}", sub
        yield from _walk(sub, f"{path}{key}.")


def test_every_key_documented_with_default():
    schema = load_schema("config")
    assert schema.get("additionalProperties") is False
    for key, sub in _walk(schema):
        assert sub.get("description"), f"{key} has no description"
        assert "default" in sub, f"{key} has no default"
        if sub.get("type") == "object":
            assert sub.get("additionalProperties") is False, f"{key} accepts unknown keys"


def test_schema_is_the_workflows():
    assert Path(REPO_ROOT / "workflow/schemas/config.schema.yaml").is_file()
