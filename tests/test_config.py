"""Config schema: defaults filled, unknown keys rejected, wrong types named, every key described."""

import json
from pathlib import Path

import pytest
import yaml

import emofusion
from conftest import DEMO, REPO, snakemake
from emofusion.config import load_config, load_schema, schema_path, validate_config, validate_workflow_config
from emofusion.errors import ConfigError


def test_defaults_filled():
    cfg = validate_config({})
    assert cfg["corpus"]["root"] == "resources/demo"
    assert cfg["folds"] == {"k": 3, "seed": 0}
    assert cfg["clips_per_face_job"] == "auto"  # a job per clip on a corpus as small as the demo


def _leaves(tree, path=()):
    """Every value the file sets, by its key path; an empty section (`faces: {}`) sets none: its keys take defaults."""
    if isinstance(tree, dict) and (tree or len(path) == 1):
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
        ({"corpus": {"bogus": 1}}, r"corpus\.bogus: unknown key; corpus takes format, manifest, .*root"),
        ({"nonsense": {}}, r"nonsense: unknown key; the top level takes asr, audio, .*corpus"),
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
    """The schema is package data (an installed emofusion finds it) and the only copy: common.smk validates the
    workflow's config with it through validate_workflow_config (load_schema reads schema_path())."""
    path = schema_path()
    assert path.is_file() and path.parent.parent == Path(emofusion.__file__).resolve().parent
    copies = [p for top in ("src", "workflow", "tests") for p in (REPO / top).rglob("*.schema.yaml")]
    assert [p.resolve() for p in copies] == [path.resolve()]
    assert "validate_workflow_config(config)" in (REPO / "workflow/rules/common.smk").read_text()


def test_a_config_error_is_short_and_says_what_is_allowed():
    """One line per problem: the key, the value, what the key takes; never the schema (jsonschema's own message for
    a whole section's value, or Snakemake's validate, prints thousands of lines)."""
    bad = {"corpus": {"root": "x", "bogus": 1}, "fusion": {"experiments": {"late": [{"model": "x" * 500}]}}}
    with pytest.raises(ConfigError) as info:
        validate_config(bad)
    lines = str(info.value).splitlines()
    assert len(lines) == 4, lines
    assert lines[1].startswith("  corpus.bogus: unknown key; corpus takes format, manifest,")
    assert lines[2].startswith("  fusion.experiments.late: [{'model': 'xxx") and lines[2].endswith(
        "is not of type 'object'"
    )
    assert max(map(len, lines)) < 300


def test_a_dotted_key_gets_the_nested_spelling():
    with pytest.raises(ConfigError, match=r"corpus\.root: unknown key; .*in YAML write corpus: \{root: \.\.\.\}"):
        validate_config({"corpus.root": "data"})


def test_the_workflow_config_gets_the_defaults_snakemakes_validate_gives():
    """validate_workflow_config replaces snakemake.utils.validate in common.smk: the same config comes out (so every
    rule's params, and the demo's outputs, stay as they were), in place."""
    from snakemake.utils import validate

    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    theirs, ours = yaml.safe_load(yaml.safe_dump(raw)), yaml.safe_load(yaml.safe_dump(raw))
    validate(theirs, str(schema_path()))
    validate_workflow_config(ours)
    assert ours == theirs and list(ours) == list(theirs)


def test_snakemake_prints_a_short_config_error(workdir):
    """A typo in the workflow's config: a few lines naming the key (Snakemake's validate printed the schema)."""
    config = workdir / "config.yaml"
    config.write_text(config.read_text().replace("folds:\n  k: 3\n", "folds:\n  k: 3\n  kk: 2\n", 1))
    proc = snakemake("-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), cwd=workdir)
    console = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1
    assert "  folds.kk: unknown key; folds takes k, seed" in console, console
    assert len(console) <= 6 and "Traceback" not in "\n".join(console), console


def test_snakemake_numbers_in_an_inline_config_get_a_hint_that_works(workdir):
    """`--config 'folds={k: 0}'` gives Snakemake the text '0'; the hint's --configfile, as printed, works."""
    on = ["-n", "--quiet", "rules", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    proc = snakemake(*on, "--config", f"corpus={{root: {DEMO}}}", "folds={k: 0}", cwd=workdir)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "folds.k: '0' is not of type 'integer'" in console
    assert "set numbers and booleans in a file given with --configfile" in console
    (workdir / "folds.yaml").write_text("folds:\n  k: 0\n")
    proc = snakemake(*on, "--configfile", "folds.yaml", "--config", f"corpus={{root: {DEMO}}}", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_snakemake_style_config_key_gets_the_option_that_sets_it(tmp_path, caplog):
    """`emofusion ... --config corpus.root=X` (written as Snakemake's --config): --config takes a file, and the
    --config-json it advises works as printed."""
    import shlex

    from emofusion.cli import main

    out = tmp_path / "manifest.parquet"
    assert main(["manifest", "--config", f"corpus.root={DEMO}", "--config", "folds.k=2", "--out", str(out)]) == 1
    line = caplog.records[-1].getMessage()
    assert line == (
        '--config takes a config file, not folds.k=2; set one key with --config-json \'{"folds": {"k": 2}}\' '
        "(merged over --config FILE)"
    )
    assert main(["manifest", "--config", f"corpus.root={DEMO}", "--out", str(out)]) == 1
    advised = shlex.split(caplog.records[-1].getMessage().split("set one key with ", 1)[1].split(" (merged", 1)[0])
    assert advised[0] == "--config-json"
    assert main(["manifest", *advised, "--out", str(out)]) == 0 and out.is_file()


def test_the_config_key_hint_quotes_any_value_for_the_shell(tmp_path, caplog):
    """A value YAML reads as a date, or one with a quote in it, gets a --config-json that parses as printed."""
    import shlex

    from emofusion.cli import main

    for value in ("2024-06-01", "/data/o'brien"):
        assert main(["manifest", "--config", f"corpus.root={value}", "--out", str(tmp_path / "m.parquet")]) == 1
        advised = shlex.split(caplog.records[-1].getMessage().split("set one key with ", 1)[1].split(" (merged")[0])
        assert advised[0] == "--config-json" and json.loads(advised[1]) == {"corpus": {"root": value}}, advised
