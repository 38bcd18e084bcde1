"""Atomic outputs: a failure or kill mid-write leaves neither a partial file nor a temporary one."""

import json
import os

import pandas as pd
import pytest

from emofusion.io import atomic_path, read_parquet_metadata, write_json, write_parquet
from emofusion.provenance import config_hash, provenance


def test_success_renames(tmp_path):
    final = tmp_path / "sub" / "x.h5"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.endswith(".h5") and tmp != final
        tmp.write_text("done")
    assert final.read_text() == "done"
    assert [p.name for p in final.parent.iterdir()] == ["x.h5"]


def test_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "x.parquet"
    final.write_text("previous result")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert final.read_text() == "previous result"  # the old output is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_directory_mode(tmp_path):
    final = tmp_path / "d"
    with atomic_path(final, directory=True) as tmp:
        (tmp / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    with pytest.raises(ValueError), atomic_path(final, directory=True) as tmp:
        raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_parquet_metadata_round_trip(tmp_path):
    meta = provenance(config={"a": 1}, seed=3)
    write_parquet(tmp_path / "t.parquet", pd.DataFrame({"x": [1, 2]}), metadata=meta)
    back = read_parquet_metadata(tmp_path / "t.parquet")
    assert back["seed"] == 3 and back["config_hash"] == config_hash({"a": 1})
    assert back["versions"]["emofusion"] and "torch" in back["versions"]


def test_json_is_stable(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 2, "b": 1}
    assert (tmp_path / "a.json").read_text().index('"a"') < (tmp_path / "a.json").read_text().index('"b"')
