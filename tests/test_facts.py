"""Facts kept once (issue 24): settings objects take their defaults from the schema, one list of modalities, one
module that knows the results layout."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from emofusion import config as config_module
from emofusion.config import load_config, load_schema, quiet_defaults, section_defaults
from emofusion.errors import ConfigError


def _fields_without_defaults(cls) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


@pytest.mark.parametrize(
    ("cls_path", "section"),
    [("emofusion.faces.config:FaceSettings", "faces"), ("emofusion.asr.engines:AsrOptions", "asr")],
)
def test_settings_take_every_default_from_the_schema(cls_path, section, monkeypatch):
    """FaceSettings and AsrOptions hold one field per key of their section and no default of their own: built from
    nothing they are the schema's defaults, and a default changed in the schema is what they get."""
    import importlib

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    keys = list(load_schema("config")["properties"][section]["properties"])
    assert [f.name for f in dataclasses.fields(cls)] == keys
    assert _fields_without_defaults(cls) == keys  # none of them has a default here
    assert cls.from_config() == cls.from_config(load_config()[section])

    # Another default in the schema (its validated defaults, as every command sees them): the settings follow.
    changed = {**load_config(), section: {**load_config()[section], "device": "cpu", "batch_size": 3}}
    monkeypatch.setattr(config_module, "_default_config", lambda: changed)
    settings = cls.from_config({"batch_size": 7})
    assert settings.device == "cpu" and settings.batch_size == 7
    # A key the schema does not know (a record of another version, a typo): one ConfigError naming it, no TypeError.
    with pytest.raises(ConfigError, match=rf"^{section}: unknown key\(s\) legacy_key "):
        cls.from_config({"batch_size": 7, "legacy_key": 1})


def test_the_tracker_and_the_detector_repeat_no_face_default():
    """min_probability, reacquire_after, the pyramid factor, thresholds and the smallest face come from FaceSettings
    (the schema); the classes that use them have no second copy."""
    from emofusion.faces.detector import MTCNNDetector
    from emofusion.faces.tracker import SubjectTracker

    tracker = inspect.signature(SubjectTracker.__init__).parameters
    detector = inspect.signature(MTCNNDetector.__init__).parameters
    for params, names in (
        (tracker, ("min_probability", "reacquire_after")),
        (detector, ("min_face_size", "thresholds", "factor", "max_side", "detect_every")),
    ):
        assert all(params[n].default is inspect.Parameter.empty for n in names), names


def test_quiet_and_runtime_defaults_are_the_schema_s():
    from emofusion.training.experiments import RUNTIME_KEYS, experiment_section, runtime_defaults

    assert quiet_defaults() == {"corpus": {"on_bad_video": "error"}, "faces": {"decode": "auto"}}
    assert quiet_defaults()["faces"]["decode"] == section_defaults("faces")["decode"]
    fusion = section_defaults("fusion")
    assert runtime_defaults() == {k: fusion[k] for k in RUNTIME_KEYS}
    # A runtime key at the schema's default stays out of a run's params; set otherwise it is passed.
    cfg = load_config(overrides={"fusion": {"experiments": {"e": {"model": "jca"}}}})["fusion"]
    assert not set(RUNTIME_KEYS) & set(experiment_section(cfg, "e")["fusion"])
    assert fusion["device_data"] == "auto"
    cfg["device_data"] = False
    assert experiment_section(cfg, "e")["fusion"]["device_data"] is False


def test_train_run_keeps_no_runtime_default_of_its_own(monkeypatch, tmp_path):
    """train_run's runtime settings default to None and take the schema's values, so the API and the command
    train alike (they disagreed once: "auto" in train_run, False in the data layer)."""
    import inspect

    from emofusion.fusion_data import data as fusion_data
    from emofusion.training import stage

    params = inspect.signature(stage.train_run).parameters
    assert all(params[p].default is None for p in ("device_data", "device_fraction", "compile_model"))
    seen = {}

    def stop(*args, placement, **kwargs):
        seen["placement"] = placement
        raise RuntimeError("stop")

    monkeypatch.setattr(stage, "fold_data", stop)
    with pytest.raises(RuntimeError):
        stage.train_run(
            {"name": "e", "training": {}},
            fold=0,
            seed=0,
            out=tmp_path,
            manifest=None,
            labels="l",
            stores={},
            device=None,
        )
    fusion = section_defaults("fusion")
    assert seen["placement"] == fusion_data.Placement(
        device_data=fusion["device_data"], device_fraction=fusion["device_memory_fraction"]
    )


def test_one_list_of_modalities():
    from emofusion import layout
    from emofusion.features import backbones
    from emofusion.models import config as model_config

    assert backbones.MODALITIES is layout.MODALITIES is model_config.MODALITIES
    assert set(layout.MODALITIES) <= set(load_schema("config")["properties"]["features"]["properties"])


def test_the_layout_names_the_runs_and_stores_that_repair_and_status_recognise(tmp_path):
    from emofusion import layout
    from emofusion.repair import is_workflow_run, rebuild_store

    run = layout.run_dir("jca", 0, 2)
    assert run.as_posix() == "results/fusion/jca/fold0/seed2" and is_workflow_run(run)
    assert layout.is_run_dir(tmp_path / run) and not layout.is_run_dir(run.parent)
    # the rules' wildcard patterns are the same paths
    assert (
        str(layout.run_dir("{experiment}", "{fold}", "{seed}")) == "results/fusion/{experiment}/fold{fold}/seed{seed}"
    )
    for modality in layout.MODALITIES:
        store, shard = layout.store_path(modality, "b"), layout.store_shard(modality, "b", "clip1")
        assert layout.is_store(store) and layout.is_store(shard), (store, shard)
        assert rebuild_store(store) == f"snakemake --cores 2 --forcerun {store}"
    assert not layout.is_store("results/features/video/b.h5")
    assert layout.FACE_STORE.format(clip="c") == "results/faces/c.h5"


def test_the_schema_documents_the_one_list_of_video_suffixes():
    """predict.videos' description lists the suffixes a folder's videos are found by: the list the code uses."""
    from emofusion.container import VIDEO_SUFFIXES

    text = load_schema("config")["properties"]["predict"]["properties"]["videos"]["description"]
    listed = {s.strip(" ,") for s in text.replace("(", " ").split() if s.startswith("*.")}
    assert listed == {f"*{suffix}" for suffix in VIDEO_SUFFIXES}


def test_the_repository_config_restates_no_face_or_asr_default():
    """config.yaml's faces: and asr: set only what differs from the schema's defaults (none today), so changing a
    default in the schema changes the demo too, instead of the old value living on in config.yaml."""
    import yaml

    from conftest import REPO

    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    for section in ("faces", "asr"):
        restated = {k: v for k, v in (raw.get(section) or {}).items() if section_defaults(section).get(k) == v}
        assert not restated, f"config.yaml {section}: restates the schema's defaults {restated}"
