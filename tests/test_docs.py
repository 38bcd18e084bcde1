"""The manual in docs/: the configuration reference is the schema's, the site builds, the links resolve, and the
README's Quick start holds what .ci/run reads."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import config_reference  # noqa: E402


def test_configuration_reference_is_the_schemas():
    """Fails when the schema changed and docs/configuration.md was not regenerated; the message says how."""
    problem = config_reference.stale()
    assert problem is None, problem


def test_a_schema_change_makes_the_page_stale_with_the_command_to_fix_it(tmp_path):
    schema = yaml.safe_load(config_reference.SCHEMA.read_text())
    schema["properties"]["faces"]["properties"]["size"]["default"] = 128
    changed = tmp_path / "config.schema.yaml"
    changed.write_text(yaml.safe_dump(schema, sort_keys=False))
    problem = config_reference.stale(changed, config_reference.PAGE)
    assert problem == (
        f"{config_reference.PAGE} does not match {changed}: regenerate it with "
        "`python scripts/config_reference.py` (from the repository root)"
    )
    assert "| `faces.size` | integer | `128` |" in config_reference.render(schema)


def test_the_advised_command_regenerates_the_page(tmp_path):
    """The command the message prints, run as printed from a repository root, writes the page the test wants."""
    root = tmp_path / "repo"
    for rel in ("scripts/config_reference.py", "src/emofusion/schemas/config.schema.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, root / rel)
    argv = shlex.split(config_reference.REGENERATE)
    assert argv[0] == "python"
    subprocess.run([sys.executable, *argv[1:]], cwd=root, check=True)
    assert (root / "docs" / "configuration.md").read_text() == config_reference.PAGE.read_text()


def _schema_keys(node, path=""):
    for name, child in node.get("properties", {}).items():
        key = f"{path}.{name}" if path else name
        yield key, child
        yield from _schema_keys(child, key)


def test_every_key_is_documented_with_its_type_and_default():
    schema = yaml.safe_load(config_reference.SCHEMA.read_text())
    page = config_reference.render(schema)
    rows = {}
    for line in page.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    keys = list(_schema_keys(schema))
    assert len(keys) > 150  # the walk reached the backbones' options
    for key, node in keys:
        if "$ref" in node:
            continue
        if "." not in key and "properties" in node:  # a section: its heading and description head the table
            assert f"## `{key}`\n\n{config_reference._cell(node['description'])}\n" in page, key
            continue
        assert key in rows, key
        assert rows[key][1] != "any", key
        if "default" in node and node["default"] not in ({}, []):
            assert rows[key][2], key
    # the named entries of a map (the presets, the experiments) are documented through their definition
    for name in yaml.safe_load(config_reference.SCHEMA.read_text())["$defs"]["preset"]["properties"]:
        assert f"fusion.presets.<name>.{name}" in rows, name
    assert rows["fusion.presets.<name>.optimizer"][3] == "one of `adam`, `adamw`"


def test_schema_text_stays_visible_in_markdown():
    """`<clip>` outside code would be an HTML tag and vanish, `*.mp4, *.avi` would turn italic."""
    assert config_reference._cell("results/<video>.wav and `<clip>` (*.mp4, *.avi; _left/_right | x)") == (
        "results/&lt;video>.wav and `<clip>` (\\*.mp4, \\*.avi; \\_left/\\_right \\| x)"
    )


def test_quick_start_holds_the_two_commands_ci_runs():
    """.ci/run reads the README's Quick start with this sed and grep; it needs exactly two commands."""
    out = subprocess.run(
        "sed -n '/^## Quick start/,/^## /p' README.md | grep '^scripts/setup\\.sh '",
        shell=True,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(out) == 2 and "snakemake --cores 2" in out[0] and 'pytest -m "not gpu"' in out[1], out


def _relative_links(path: Path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
            yield target


@pytest.mark.parametrize("page", ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))])
def test_relative_links_point_at_files_that_exist(page):
    path = REPO / page
    missing = [t for t in _relative_links(path) if not (path.parent / t.split("#")[0]).exists()]
    assert not missing, f"{page} links to missing files: {missing}"


def test_every_docs_page_is_in_the_navigation():
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    listed = {next(iter(entry.values())) for entry in nav}
    assert listed == {p.name for p in (REPO / "docs").glob("*.md")}


def test_the_manual_builds_with_mkdocs_strict(tmp_path):
    """Broken links between pages, links to missing anchors and pages left out of the nav fail a strict build."""
    pytest.importorskip("mkdocs")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
