"""Load and validate the configuration against the package's schema, ``emofusion/schemas/config.schema.yaml``.

The schema is the single source of truth for keys, types, descriptions and defaults: Snakemake validates
`config` with this same file in workflow/rules/common.smk (:func:`validate_workflow_config`), and the command line
validates with it here, so a stage run by hand sees exactly the config Snakemake would give it. It ships inside
the package, so an installed emofusion (not only a checkout) finds it.
"""

from __future__ import annotations

import copy
import functools
import json
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from emofusion.errors import ConfigError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def schema_path(name: str = "config") -> Path:
    """The file of a schema shipped with the package (package data, see pyproject.toml)."""
    return SCHEMA_DIR / f"{name}.schema.yaml"


@functools.cache
def load_schema(name: str = "config") -> dict[str, Any]:
    """A schema shipped with the package, parsed."""
    path = schema_path(name)
    if not path.is_file():
        raise ConfigError(
            f"schema {path} not found: the emofusion installation is incomplete; reinstall it "
            "(pip install . from the checkout, or scripts/setup.sh)"
        )
    return yaml.safe_load(path.read_text())


def _validator_filling_defaults():
    """A Draft 2020-12 validator that also writes each property's default into the instance."""
    import jsonschema

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a message names a value, it does not dump a section."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parses_as(text: str, expected: str) -> bool:
    """Whether ``text`` is a number (or boolean) that YAML would have read as ``expected``."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    if "boolean" in expected and isinstance(value, bool):
        return True
    return (
        ("number" in expected or "integer" in expected)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    )


def _error_lines(err) -> list[str]:
    """One line per problem of a jsonschema error: the key, the value, what is allowed (never the schema)."""
    path = [str(p) for p in err.absolute_path]
    key = ".".join(path) or "(top level)"
    allowed = err.validator_value
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = sorted(err.schema.get("properties", {}))
        lines = []
        for name in sorted(set(err.instance) - set(known), key=str):
            full = ".".join([*path, str(name)])
            where = ".".join(path) or "the top level"
            patterns = list(err.schema.get("patternProperties", {}))
            if patterns and not known:  # a mapping of names (presets, experiments)
                lines.append(f"{full}: {where} names must match {' or '.join(patterns)}")
                continue
            line = f"{full}: unknown key; {where} takes {', '.join(known)}"
            head = str(name).split(".")[0]
            if "." in str(name) and head in known:
                # `snakemake --config corpus.root=x` or a YAML key written with dots: nothing nests a dotted key
                rest = str(name).split(".", 1)[1]
                line += (
                    f" (a dotted key is not nested: in YAML write {head}: {{{rest}: ...}}, on Snakemake's command "
                    f"line --config '{head}={{{rest}: ...}}')"
                )
            lines.append(line)
        return lines
    if err.validator == "type":
        expected = ", ".join(map(repr, allowed)) if isinstance(allowed, list) else repr(allowed)
        line = f"{key}: {_short(err.instance)} is not of type {expected}"
        if isinstance(err.instance, str) and _parses_as(err.instance, expected):
            line += (
                " (`snakemake --config 'section={key: 5}'` passes the values inside {...} as text: set numbers and "
                "booleans in a file given with --configfile)"
            )
        return [line]
    if err.validator == "enum":
        return [f"{key}: {_short(err.instance)} is not one of {', '.join(map(repr, allowed))}"]
    message = err.message if len(err.message) <= 200 else err.message[:199] + "…"
    return [f"{key}: {message}"]


def validate_config(config: dict[str, Any] | None, *, source: str = "config") -> dict[str, Any]:
    """Return a validated deep copy of ``config`` with defaults filled; raise ConfigError naming the key."""
    cfg = copy.deepcopy(config) if config is not None else {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(cfg).__name__}")
    validator = _validator_filling_defaults()(load_schema("config"))
    errors = sorted(validator.iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [line for err in errors for line in _error_lines(err)]
        raise ConfigError(
            f"{source} is invalid:\n"
            + "\n".join(f"  {line}" for line in lines)
            + f"\nSee {schema_path()} for every key, its type and its default."
        )
    return cfg


@functools.cache
def _default_config() -> dict[str, Any]:
    return validate_config({}, source="the schema's defaults")


def section_defaults(name: str) -> dict[str, Any]:
    """Every key of section ``name`` with the schema's default (a copy): what a settings object (FaceSettings,
    AsrOptions) is built on, so a command run by hand, a store's record of an older version and a test get the
    defaults Snakemake's validated config has."""
    return copy.deepcopy(_default_config()[name])


def over_defaults(name: str, section: dict[str, Any] | None, known: Iterable[str]) -> dict[str, Any]:
    """``section`` laid over the schema's defaults of section ``name``, for a settings object whose fields are
    ``known``; ConfigError naming a key it does not know (a record written by another version, a typo) instead of a
    TypeError deep in the constructor."""
    unknown = sorted(set(section or {}) - set(known))
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {', '.join(unknown)} (every key: docs/configuration.md)")
    return {**section_defaults(name), **(section or {})}


def schema_default(section: str, key: str) -> Any:
    """The schema's default of ``section.key`` (a copy)."""
    return section_defaults(section)[key]


# Keys added after results existed, left out of a rule's params while at their default: a new version with a new
# option then reruns nothing until the option is used (the command fills the same default).
QUIET_KEYS = {"corpus": ("on_bad_video",), "faces": ("decode",)}


def quiet_defaults() -> dict[str, dict[str, Any]]:
    """``{section: {key: schema default}}`` of :data:`QUIET_KEYS`."""
    return {s: {k: schema_default(s, k) for k in keys} for s, keys in QUIET_KEYS.items()}


# clips_per_*_job: auto: a job per clip or video up to this many, else the ids cut into at most this many shards
# per stage, so a corpus of Aff-Wild2's size plans a few hundred jobs in all and a small one (the demo) a job each.
AUTO_SHARDS = 48


def shard_size(value: int | str, count: int) -> int:
    """The clips (or videos) per job of a clips_per_*_job ``value`` for a stage of ``count`` of them."""
    if value == "auto":
        return max(1, -(-count // AUTO_SHARDS))
    return int(value)


def validate_workflow_config(config: dict[str, Any]) -> None:
    """Validate Snakemake's ``config`` in place, filling defaults as ``snakemake.utils.validate`` would; raise
    ConfigError with one short line per problem (Snakemake's own validate prints the whole schema)."""
    valid = validate_config(config, source="the workflow's config (config.yaml, --configfile, --config)")
    config.clear()
    config.update(valid)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: what, at which line and column (PyYAML's message spans several, with a caret)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def load_config(path: str | Path | None = None, *, overrides: str | dict | None = None) -> dict[str, Any]:
    """Load a YAML config file (or none) plus JSON overrides (merged per section), validated with defaults.

    ``overrides`` is what Snakemake rules pass: the already-validated sections a stage needs, as JSON.
    """
    cfg: dict[str, Any] = {}
    source = "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            key, sep, value = str(path).partition("=")
            if sep and key and "/" not in key:  # `--config corpus.root=data`, as Snakemake's --config is written
                *sections, last = key.split(".")
                try:
                    setting: Any = yaml.safe_load(value)  # typed as the YAML file would type it: 5, true, a path
                except yaml.YAMLError:
                    setting = value
                for name in reversed([*sections, last]):
                    setting = {name: setting}
                raise ConfigError(
                    f"--config takes a config file, not {path}; set one key with --config-json "
                    f"{shlex.quote(json.dumps(setting, default=str))} (merged over --config FILE)"
                )
            raise ConfigError(f"config file {p} does not exist; pass --config with the path of your config.yaml")
        try:
            cfg = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {_yaml_problem(e)}; fix that line") from None
        source = str(p)
    if overrides:
        if isinstance(overrides, str):
            try:
                overrides = json.loads(overrides)
            except json.JSONDecodeError as e:
                raise ConfigError(f"--config-json is not valid JSON: {e}") from None
        if not isinstance(overrides, dict):
            raise ConfigError("--config-json must be a JSON object of config sections")
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
    return validate_config(cfg, source=source)
