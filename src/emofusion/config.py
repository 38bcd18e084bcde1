"""Load and validate the configuration against the package's schema, ``emofusion/schemas/config.schema.yaml``.

The schema is the single source of truth for keys, types, descriptions and defaults: Snakemake validates
`config` with this same file in workflow/rules/common.smk (through :func:`schema_path`), and the command line
validates with it here, so a stage run by hand sees exactly the config Snakemake would give it. It ships inside
the package, so an installed emofusion (not only a checkout) finds it.
"""

from __future__ import annotations

import copy
import functools
import json
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


def validate_config(config: dict[str, Any] | None, *, source: str = "config") -> dict[str, Any]:
    """Return a validated deep copy of ``config`` with defaults filled; raise ConfigError naming the key."""
    cfg = copy.deepcopy(config) if config is not None else {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(cfg).__name__}")
    validator = _validator_filling_defaults()(load_schema("config"))
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            lines.append(f"  {key}: {err.message}")
        raise ConfigError(
            f"{source} is invalid:\n"
            + "\n".join(lines)
            + f"\nSee {schema_path()} for every key, its type and its default."
        )
    return cfg


def load_config(path: str | Path | None = None, *, overrides: str | dict | None = None) -> dict[str, Any]:
    """Load a YAML config file (or none) plus JSON overrides (merged per section), validated with defaults.

    ``overrides`` is what Snakemake rules pass: the already-validated sections a stage needs, as JSON.
    """
    cfg: dict[str, Any] = {}
    source = "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass --config with the path of your config.yaml")
        try:
            cfg = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
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
