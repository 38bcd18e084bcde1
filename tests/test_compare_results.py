"""scripts/compare_results.py, the check that a refactor left the demo's outputs byte-identical: it must see a
changed array, a changed table and a changed weight, and must not see provenance."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import torch

from conftest import load_script

compare_results = load_script("compare_results")


def _tree(root, *, value=1.0, git="abc", weight=0.5):
    root.mkdir(parents=True)
    with h5py.File(root / "store.h5", "w") as h5:
        h5.attrs["provenance"] = json.dumps({"git": git})
        h5.attrs["width"] = 3
        h5.create_dataset("clip/features", data=np.full((4, 3), value, np.float32))
    pd.DataFrame({"frame": [0, 1], "valence": [value, 0.0]}).to_parquet(root / "predictions.parquet")
    (root / "metrics.json").write_text(json.dumps({"ccc": value, "provenance": {"git": git}}))
    torch.save({"state_dict": {"w": torch.full((2,), weight)}, "provenance": {"git": git}}, root / "model.pt")
    return root


def test_provenance_alone_is_no_difference(tmp_path):
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b", git="def")
    assert compare_results.compare(a, b) == []
    assert compare_results.main([str(a), str(b)]) == 0


def test_changed_data_weights_and_files_are_found(tmp_path):
    a = _tree(tmp_path / "a")
    found = compare_results.compare(a, _tree(tmp_path / "b", value=2.0))
    assert {"store.h5: data /clip/features", "predictions.parquet: table data", "metrics.json: JSON content"} <= set(
        found
    )
    found = compare_results.compare(a, _tree(tmp_path / "c", weight=0.25))
    assert found == ["model.pt: tensor /state_dict/w"]
    shutil.copy(a / "metrics.json", a / "extra.json")
    assert compare_results.main([str(a), str(tmp_path / "c")]) == 1
    assert "only in A: extra.json" in compare_results.compare(a, tmp_path / "c")


def test_data_named_like_provenance_is_still_compared(tmp_path):
    """Only whole volatile key names are skipped: a changed timeline or weights hash is a difference."""
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    for root, value in ((a, "frames"), (b, "window")):
        with h5py.File(root / "store.h5", "a") as h5:
            h5.attrs["timeline"] = value
            h5.attrs["weights_sha256"] = "0" * 64
    assert compare_results.compare(a, b) == ["store.h5: attribute /@timeline"]


def test_a_map_of_file_hashes_is_provenance_and_a_map_of_weights_is_data(tmp_path):
    """The report's provenance.json records each run's files by sha256 (model.pt changes with its provenance): not
    a difference. A modality -> weights sha256 map is a backbone's identity: a difference."""
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    for root, digit in ((a, "1"), (b, "2")):
        doc = {"runs": [{"files": {"model.pt": digit * 64, "log.jsonl": digit * 64}, "weights": {"visual": "0" * 64}}]}
        (root / "provenance.json").write_text(json.dumps(doc))
    assert compare_results.compare(a, b) == []
    doc["runs"][0]["weights"]["visual"] = "3" * 64
    (b / "provenance.json").write_text(json.dumps(doc))
    assert compare_results.compare(a, b) == ["provenance.json: JSON content"]
