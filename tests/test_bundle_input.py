"""A bundle is input from elsewhere: a malformed bundle.json is one line naming the bundle and the key, and each
member is refused by its size before it is read (a sparse 400 MB bundle.json in a tar of a few kB cost 323 MB)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from emofusion.cli import main
from emofusion.errors import InputError
from test_predict import _bundle


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def _set_recipe(value):
    def edit(doc):
        doc["recipe"] = value

    return edit


def _edit_recipe(change):
    def edit(doc):
        change(doc["recipe"])

    return edit


# bundle.json edits -> what the one line says after "bundle <path>: "
MALFORMED = {
    "no recipe": (lambda doc: doc.pop("recipe"), "bundle.json's recipe is missing"),
    "recipe is a list": (_set_recipe([1, 2]), "bundle.json's recipe is a list, not an object"),
    "unknown modality": (
        _edit_recipe(lambda r: r.update(modalities=["smell"])),
        "bundle.json's recipe.modalities is ['smell']; a model reads one or more distinct modalities of visual, "
        "audio, text",
    ),
    "modality without a backbone": (
        _edit_recipe(lambda r: r["backbones"].clear()),
        "bundle.json's recipe.backbones.audio is missing",
    ),
    "fold is text": (_edit_recipe(lambda r: r.update(fold="0")), "bundle.json's recipe.fold is a string, not a number"),
    "top level is a list": (None, "bundle.json is a list, not an object"),
    "deeply nested": (None, "bundle.json is nested too deeply to be a bundle's"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_bundle_json_is_one_line_naming_the_bundle_and_the_key(case, tmp_path, caplog):
    edit, expected = MALFORMED[case]
    bundle = _bundle(tmp_path / "b", edit=edit)
    if case == "top level is a list":
        (bundle / "bundle.json").write_text("[1, 2]")
    elif case == "deeply nested":
        (bundle / "bundle.json").write_text(_nest(100_000))
    rc = main(["predict", str(tmp_path / "v.mp4"), "--model", str(bundle), "--out", str(tmp_path / "out")])
    assert rc == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None, [r.getMessage() for r in errors]
    assert errors[0].getMessage().startswith(f"bundle {bundle}: {expected}"), errors[0].getMessage()
    assert "export it again" in errors[0].getMessage()
    assert not (tmp_path / "out").exists()


def test_a_deeply_nested_bundle_json_in_a_real_process(tmp_path):
    bundle = _bundle(tmp_path / "b")
    (bundle / "bundle.json").write_text(_nest(100_000))
    args = ["predict", str(tmp_path / "v.mp4"), "--model", str(bundle), "--out", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, "-m", "emofusion.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "nested too deeply" in proc.stderr


def test_a_valid_bundle_loads_as_before(tmp_path):
    from emofusion.predict.bundle import load_bundle

    for tar in (False, True):
        bundle = _bundle(tmp_path / f"b{tar}", modalities=("audio", "text"), tar=tar)
        model = load_bundle(bundle)
        expected = json.loads(((tmp_path / f"b{tar}") / "bundle.json").read_text())["recipe"]
        assert model.recipe == expected and model.source["kind"] == "bundle"


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar makes the sparse member")
def test_a_sparse_oversized_bundle_json_is_refused_before_it_is_read(tmp_path):
    """The probe: a tar of a few kB whose bundle.json member expands to 400 MB. Refused from its header, with next
    to no memory."""
    from emofusion.predict.bundle import load_bundle

    src = _bundle(tmp_path / "b")
    with open(src / "bundle.json", "r+b") as f:
        f.truncate(400 << 20)  # sparse: a hole after the JSON
    tar = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(tar), "-C", str(src), "bundle.json", "model.pt"], check=True)
    assert tar.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"bundle\.json is 419430400 bytes, more than the 1048576 .*export"):
            load_bundle(tar)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_an_oversized_member_of_a_bundle_folder_is_refused_by_its_size(tmp_path, monkeypatch):
    from emofusion.predict import bundle as bundle_module

    bundle = _bundle(tmp_path / "b")
    with open(bundle / "model.pt", "r+b") as f:
        f.truncate(3 << 20)
    monkeypatch.setitem(bundle_module.MEMBER_CAPS, "model.pt", 2 << 20)  # a small cap: the test writes no gigabyte

    def no_read(self):
        raise AssertionError(f"{self} was read")

    monkeypatch.setattr(Path, "read_bytes", no_read)
    with pytest.raises(InputError, match=r"model\.pt is 3145728 bytes, more than the 2097152"):
        bundle_module.load_bundle(bundle)
