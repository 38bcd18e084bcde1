#!/usr/bin/env python3
"""Write docs/configuration.md, the configuration reference, from the config schema.

The schema (src/emofusion/schemas/config.schema.yaml) is the one place a key, its type, default, allowed values and
description are written; this page is generated from it so the manual cannot drift away. tests/test_docs.py fails
while the page and the schema disagree, naming the command below. Usage, from the repository root:

    python scripts/config_reference.py             # rewrite docs/configuration.md
    python scripts/config_reference.py --out FILE  # write elsewhere (the tests)
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src" / "emofusion" / "schemas" / "config.schema.yaml"
PAGE = ROOT / "docs" / "configuration.md"
REGENERATE = "python scripts/config_reference.py"

# A default longer than this goes in a YAML block under the section's table instead of its cell.
INLINE_DEFAULT = 60


def _cell(text: str) -> str:
    """Schema text as Markdown for one table cell or paragraph: one line, no column separator, and outside `code`
    no HTML tag (`<clip>` would vanish), emphasis (`*.mp4, *.avi`) or underscore emphasis (`_left/_right`)."""
    spans = " ".join(text.split()).split("`")
    for i in range(0, len(spans), 2):  # outside code spans
        spans[i] = re.sub(r"(?<![A-Za-z0-9])_", r"\\_", spans[i].replace("<", "&lt;").replace("*", "\\*"))
    return "`".join(spans).replace("|", "\\|")


def _flow(value: Any) -> str:
    """A value as YAML flow text (how it is written in config.yaml), on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
    return text.strip().removesuffix("...").strip()  # a scalar document ends with "..."


def _types(node: dict[str, Any]) -> str:
    types = node.get("type")
    if types is None and "enum" in node:  # e.g. amp: true | false | "bf16"
        types = sorted({"boolean" if isinstance(v, bool) else "null" if v is None else "string" for v in node["enum"]})
    if types is None:
        return "any"
    return " or ".join(types) if isinstance(types, list) else types


def _allowed(node: dict[str, Any]) -> str:
    """The schema's constraints on a value, in words."""
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{_flow(v)}`" for v in node["enum"]))
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in node:
            parts.append(f"{sign} {node[key]}")
    if "minLength" in node:
        parts.append(f"at least {node['minLength']} character(s)")
    if "pattern" in node:
        parts.append(f"a string matching `{node['pattern']}`")
    if "minItems" in node or "maxItems" in node:
        low, high = node.get("minItems"), node.get("maxItems")
        parts.append(f"{low} items" if low == high else f"{low or 0} to {high} items" if high else f"≥ {low} items")
    if node.get("uniqueItems"):
        parts.append("no repeats")
    if isinstance(node.get("items"), dict):
        items = node["items"]
        inner = _allowed(items)
        parts.append(f"items: {_types(items)}" + (f", {inner}" if inner else ""))
    if "propertyNames" in node and "enum" in node["propertyNames"]:
        parts.append("keys: " + ", ".join(f"`{k}`" for k in node["propertyNames"]["enum"]))
    if "required" in node:
        parts.append("requires " + ", ".join(f"`{k}`" for k in node["required"]))
    return "; ".join(parts)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def keys(schema: dict[str, Any], node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(dotted key, schema node)`` of ``node``'s keys, depth first in the schema's order. A map of named entries
    (fusion.presets, fusion.experiments) lists its entries' keys under ``<name>``."""
    for name, child in node.get("properties", {}).items():
        child = _resolve(schema, child)
        key = f"{path}.{name}" if path else name
        yield key, child
        yield from keys(schema, child, key)
    for pattern, child in node.get("patternProperties", {}).items():
        child = _resolve(schema, child)
        key = f"{path}.<name>"
        yield key, {**child, "description": f"(a name matching `{pattern}`) {child.get('description', '')}"}
        yield from keys(schema, child, key)


def render(schema: dict[str, Any]) -> str:
    """The reference page: the schema's description, then per top-level key a table of it and every key below."""
    lines = [
        "<!-- Generated from src/emofusion/schemas/config.schema.yaml by scripts/config_reference.py; do not edit:",
        f"     change the schema, then run `{REGENERATE}`. tests/test_docs.py checks the two agree. -->",
        "",
        "# Configuration reference",
        "",
        _cell(schema.get("description", "")),
        "",
        "Every key of `config.yaml`, as the schema `src/emofusion/schemas/config.schema.yaml` defines it (the "
        "pipeline and every `emofusion` command validate against that file). A key left out takes its default; "
        "an object's default `{}` means its keys take theirs. Snakemake's `--config` sets top-level keys "
        "(see [Troubleshooting](troubleshooting.md)).",
        "",
    ]
    for top, node in schema["properties"].items():
        node = _resolve(schema, node)
        lines += [f"## `{top}`", "", _cell(node.get("description", "")), ""]
        rows = [(top, node), *keys(schema, node, top)] if "properties" not in node else list(keys(schema, node, top))
        lines += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
        blocks = []
        for key, child in rows:
            default = ""
            if "default" in child:
                text = _flow(child["default"])
                if len(text) > INLINE_DEFAULT:
                    blocks += [
                        f"Default of `{key}`:",
                        "",
                        "```yaml",
                        yaml.safe_dump(child["default"], sort_keys=False).strip(),
                        "```",
                        "",
                    ]
                    default = "see below"
                else:
                    default = f"`{_cell(text)}`"
            description = child.get("description", "") if key != top else ""
            lines.append(f"| `{key}` | {_types(child)} | {default} | {_cell(_allowed(child))} | {_cell(description)} |")
        lines += ["", *blocks]
    return "\n".join(lines).rstrip("\n") + "\n"


def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def stale(schema: Path = SCHEMA, page: Path = PAGE) -> str | None:
    """None when ``page`` is what ``schema`` generates, else the one-line message saying how to regenerate it."""
    want = render(load_schema(schema))
    if page.is_file() and page.read_text() == want:
        return None
    return f"{page} does not match {schema}: regenerate it with `{REGENERATE}` (from the repository root)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PAGE, help="the page to write (default: %(default)s)")
    parser.add_argument("--schema", type=Path, default=SCHEMA, help="the schema to read (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(load_schema(args.schema)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
