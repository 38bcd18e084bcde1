"""Config schema: defaults filled, unknown keys rejected, wrong types named, every key described."""

from pathlib import Path

import pytest
import yaml

import emofusion
from conftest import REPO
from emofusion.config import load_config, load_schema, schema_path, validate_config
from emofusion.errors import ConfigError


def test_defaults_filled():
    cfg = validate_config({})
    assert cfg["corpus"]["root"] == "resources/demo"
    assert cfg["folds"] == {"k": 3, "seed": 0}
    assert cfg["clips_per_face_job"] == 1  # a job per clip


def _leaves(tree, path=()):
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path, tree


def _get(cfg, path):
    for key in path:
        cfg = cfg[key]
    return cfg


def test_repo_config_is_valid_and_complete():
    """config.yaml's values come through unchanged, what it leaves out takes the schema's default, and the resolved
    config holds every key the schema declares."""
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg = load_config(REPO / "config.yaml")
    for path, value in _leaves(raw):
        assert _get(cfg, path) == value, ".".join(path)
    assert cfg["corpus"]["root"] == "resources/demo" and cfg["folds"] == {"k": 3, "seed": 0}
    assert cfg["faces"]["thresholds"] == [0.6, 0.7, 0.7] and cfg["asr"]["model"] == "tiny.en-bundled"
    # left out of config.yaml: the schema's defaults
    assert cfg["corpus"]["manifest"] is None and cfg["corpus"]["test_list"] is None
    assert cfg["features"]["visual"]["backbones"]["fer"] == {"probabilities": False}
    assert cfg["features"]["audio"]["backbones"]["egemaps"] == {"window": 1.0, "stats": ["mean", "std"]}
    jca = cfg["fusion"]["experiments"]["jca"]
    assert jca == {
        "model": "jca",
        "model_options": {"lstm_layers": 1, "head_hidden": 32},
        "preset": "demo",
        "stores": {"visual": "fer", "audio": "egemaps"},
        "training": {},
    }
    assert cfg["fusion"]["experiments"]["rjcma"]["preset"] == "demo_frame"  # set in the file: no default over it
    assert cfg["fusion"]["experiments"]["unimodal_audio"]["stores"] == {"audio": "egemaps"}
    assert {"demo", "demo_frame", "rjca", "dca", "rjcma"} <= set(cfg["fusion"]["presets"])
    assert cfg["fusion"]["presets"]["demo"]["epochs"] == 8 and cfg["fusion"]["presets"]["demo"]["lr"] == 0.003
    # complete: every key the schema declares, at every depth
    schema = load_schema("config")
    assert set(cfg) == set(schema["properties"])
    for key, _ in _walk(schema):
        _get(cfg, key.split("."))  # KeyError names the missing key


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"corpus": {"bogus": 1}}, r"corpus: Additional properties are not allowed \('bogus'"),
        ({"nonsense": {}}, r"\(top level\): Additional properties"),
        ({"folds": {"k": "three"}}, r"folds.k: 'three' is not of type 'integer'"),
        ({"folds": {"k": -1}}, r"folds.k: -1 is less than the minimum"),
        ({"corpus": {"format": "kaldi"}}, r"corpus.format: 'kaldi' is not one of"),
        ({"clips_per_face_job": 0}, r"clips_per_face_job: 0 is less than the minimum"),
    ],
)
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


def test_one_schema_inside_the_package_and_the_workflow_validates_with_it():
    """The schema is package data (an installed emofusion finds it) and the only copy: Snakemake's validate() in
    common.smk reads the same file through schema_path()."""
    path = schema_path()
    assert path.is_file() and path.parent.parent == Path(emofusion.__file__).resolve().parent
    copies = [p for top in ("src", "workflow", "tests") for p in (REPO / top).rglob("*.schema.yaml")]
    assert [p.resolve() for p in copies] == [path.resolve()]
    assert "validate(config, str(schema_path()))" in (REPO / "workflow/rules/common.smk").read_text()
