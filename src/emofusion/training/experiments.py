"""Experiments from the ``fusion:`` config section: preset and overrides merged and checked, stores, run folders.

Every function takes a ``fusion`` section validated by the schema (``load_config``, or Snakemake's ``validate``),
so every key has its value or the schema's default; the defaults are not repeated here.

A resolved experiment is a plain dict (JSON-serialisable, recorded in every run)::

    {"name", "model", "model_options", "stores": {modality: backbone}, "preset", "training": {every preset key}}

:func:`experiment_section` gives the minimal ``fusion`` config that holds only one experiment and its preset:
what the Snakemake rules pass to `emofusion train/evaluate`, so editing one experiment changes only its rules'
params.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from emofusion.errors import ConfigError
from emofusion.features.backbones import backbone_class
from emofusion.layout import STORE_ROOT, store_path


def _preset_schema() -> dict[str, Any]:
    from emofusion.config import load_schema

    return load_schema("config")["$defs"]["preset"]


def presets(fusion: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The built-in presets (the schema's default of fusion.presets) with the config's own added or replacing
    them by name, so listing one preset in a config does not drop the published ones."""
    from emofusion.config import load_schema

    builtin = load_schema("config")["properties"]["fusion"]["properties"]["presets"]["default"]
    return {**copy.deepcopy(builtin), **fusion["presets"]}


def resolve_experiment(fusion: dict[str, Any], name: str) -> dict[str, Any]:
    """The experiment ``name`` of a validated ``fusion`` section with its preset merged under its overrides.

    The merged training settings are validated against the preset schema (an override of the wrong type names
    ``fusion.experiments.<name>.training.<key>``)."""
    import jsonschema

    experiments = fusion["experiments"]
    if not experiments:
        raise ConfigError(
            f"fusion.experiments is empty, so there is no experiment {name!r}: the defaults define "
            "none; pass the config that defines it, e.g. `--config config.yaml`"
        )
    if name not in experiments:
        raise ConfigError(f"fusion.experiments has no experiment {name!r}; configured: {sorted(experiments)}")
    exp = copy.deepcopy(experiments[name])
    preset_name = exp["preset"]
    known = presets(fusion)
    if preset_name not in known:
        raise ConfigError(
            f"fusion.experiments.{name}.preset: no preset {preset_name!r} in fusion.presets; defined: {sorted(known)}"
        )
    check_model_name(name, exp["model"])
    training = {**known[preset_name], **exp["training"]}
    schema = _preset_schema()
    for err in jsonschema.Draft202012Validator(schema).iter_errors(training):
        key = ".".join(str(p) for p in err.absolute_path)
        raise ConfigError(
            f"fusion.experiments.{name}.training.{key} (preset {preset_name!r} with the "
            f"experiment's overrides): {err.message}"
        )
    for key, sub in schema["properties"].items():  # a preset written by hand may leave keys to their defaults
        training.setdefault(key, copy.deepcopy(sub["default"]))
    return {
        "name": name,
        "model": exp["model"],
        "model_options": dict(exp["model_options"]),
        "stores": dict(exp["stores"]),
        "preset": preset_name,
        "training": training,
    }


@functools.cache
def model_names() -> tuple[list[str], list[str]]:
    """(registered model names, variant names), read from the model package's source: the ``@register_model``
    decorators and the ``VARIANTS`` keys. Importing the registry costs torch (seconds), too much for every Snakemake
    invocation that checks the config; tests/test_dag_checks.py holds this equal to the registry's own lists."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("emofusion.models")  # imports only emofusion, not the package (torch)
    assert spec is not None and spec.submodule_search_locations
    models, variants = [], []
    for path in sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_model" and node.args:
                models.append(ast.literal_eval(node.args[0]))
            elif isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "VARIANTS" and node.value:
                variants += [ast.literal_eval(k) for k in node.value.keys if k is not None]  # type: ignore[attr-defined]
    return sorted(m for m in models if isinstance(m, str)), sorted(variants)


def check_model_name(experiment: str, model: str) -> None:
    """``model`` is a registered model or named variant; else a ConfigError naming the experiment's key (the
    message of the registry's own resolve())."""
    models, variants = model_names()
    if model not in models and model not in variants:
        raise ConfigError(
            f"fusion.experiments.{experiment}.model: unknown model {model!r}; models: {models}, variants: {variants}"
        )


# fusion.<key>: how a run computes; passed to a run's rules beside its experiment so `emofusion train` sees them
RUNTIME_KEYS = ("tf32", "device_data", "device_memory_fraction", "compile")


def runtime_defaults() -> dict[str, Any]:
    """The schema's default of each of :data:`RUNTIME_KEYS`."""
    from emofusion.config import section_defaults

    fusion = section_defaults("fusion")
    return {key: fusion[key] for key in RUNTIME_KEYS}


def experiment_section(fusion: dict[str, Any], name: str, *, smoothing: bool = False) -> dict[str, Any]:
    """``{"fusion": ...}`` holding only experiment ``name``, its preset and the device (plus the smoothing
    settings for evaluation): a valid config section whose JSON changes only when this experiment does."""
    exp = fusion["experiments"][name]
    preset = exp["preset"]
    section: dict[str, Any] = {
        "device": fusion["device"],
        "experiments": {name: exp},
        "presets": {preset: presets(fusion).get(preset, {})},
    }
    if smoothing:
        section["smoothing"] = fusion["smoothing"]
    for key, default in runtime_defaults().items():  # only when set otherwise: the default leaves the param as it was
        if fusion.get(key, default) != default:
            section[key] = fusion[key]
    return {"fusion": section}


def experiment_stores(fusion: dict[str, Any], name: str, root: str | Path = STORE_ROOT) -> dict[str, str]:
    """``{modality: store path}`` an experiment reads."""
    exp = fusion["experiments"][name]
    return {m: str(store_path(m, b, root)) for m, b in exp["stores"].items()}


def check_stores(fusion: dict[str, Any], root: str | Path = STORE_ROOT) -> None:
    """Every store an experiment names is a registered backbone of its modality or an existing file under
    ``root``; else a ConfigError naming the experiment's key (the DAG would otherwise fail on the store's rule,
    naming no experiment)."""
    for name, exp in sorted(fusion["experiments"].items()):
        for modality, backbone in sorted(exp["stores"].items()):
            if store_path(modality, backbone, root).is_file():
                continue  # a store made outside the workflow (or by an earlier run): nothing to build
            try:
                backbone_class(modality, backbone)
            except ConfigError as e:
                known = str(e).partition("; ")[2]
                raise ConfigError(
                    f"fusion.experiments.{name}.stores.{modality}: unknown store {backbone!r}; "
                    f"{known}; no file {store_path(modality, backbone, root)} either"
                ) from None


def grid(fusion: dict[str, Any]) -> list[tuple[str, int, int]]:
    """Every ``(experiment, fold, seed)`` run of the section, in a stable order (its stores checked first)."""
    check_stores(fusion)
    return [
        (name, fold, seed)
        for name in sorted(fusion["experiments"])
        for fold in fusion["folds"]
        for seed in fusion["seeds"]
    ]
