"""Feature shards and stores: merging shards, the lazy picklable reader, rows a store refuses."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from emofusion.errors import InputError
from emofusion.features import stage
from emofusion.features.backbones import build_backbone
from emofusion.features.store import FeatureStore, StoreMismatch, read_attrs, store_attrs, write_store
from feature_inputs import SR, times_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------- shards, merge


def _shard(
    path: Path,
    clips: dict[str, int],
    *,
    backbone: str = "_test_mean",
    width: int = 4,
    seed: int = 0,
    sha: str = "none",
    timeline: str = "t",
    config_hash: str = "x",
) -> Path:
    rng = np.random.default_rng(seed)
    items = [
        (c, rng.standard_normal((n, width)).astype(np.float32), rng.random(n) > 0.3, 30.0) for c, n in clips.items()
    ]
    attrs = store_attrs(
        modality="visual",
        backbone=backbone,
        width=width,
        native_rate=0.0,
        timeline=timeline,
        weights_sha256=sha,
        weights_source="test",
        licence="test",
        provenance={"config_hash": config_hash},
    )
    write_store(path, items, attrs)
    return path


def test_merging_shards_equals_one_shard_of_all_clips(tmp_path):
    a = _shard(tmp_path / "a.h5", {"c1": 5}, seed=1)
    b = _shard(tmp_path / "b.h5", {"c2": 3}, seed=2)
    stage.merge_shards([b, a], tmp_path / "merged.h5", provenance={"merge": 1})
    one = tmp_path / "one.h5"
    with h5py.File(a) as fa, h5py.File(b) as fb:
        items = [(c, f[c]["features"][:], f[c]["valid"][:], 30.0) for f in (fa, fb) for c in f]
    write_store(one, items, {**read_attrs(a), "provenance": {}})
    merged, single = FeatureStore(tmp_path / "merged.h5"), FeatureStore(one)
    assert merged.clips == single.clips == ["c1", "c2"] and merged.frames == {"c1": 5, "c2": 3}
    for c in merged.clips:
        for x, y in zip(merged.read(c), single.read(c), strict=True):
            np.testing.assert_array_equal(x, y)
    prov = merged.attrs["provenance"]
    assert prov["merge"] == 1 and [s["path"] for s in prov["shards"]] == [str(b), str(a)]
    # the order of the shards does not change the bytes of the data
    stage.merge_shards([a, b], tmp_path / "merged2.h5", provenance={"merge": 1, "shards_given": "ab"})
    assert FeatureStore(tmp_path / "merged2.h5").load()["c2"][0].tobytes() == merged.load()["c2"][0].tobytes()


def test_merge_refuses_disagreeing_shards_naming_both_files(tmp_path):
    a = _shard(tmp_path / "a.h5", {"c1": 5})
    wide = _shard(tmp_path / "wide.h5", {"c2": 5}, width=6)
    other = _shard(tmp_path / "other.h5", {"c3": 5}, sha="f" * 64)
    with pytest.raises(StoreMismatch, match=rf"width: {a} has 4, {wide} has 6"):
        stage.merge_shards([a, wide], tmp_path / "m.h5", provenance={})
    with pytest.raises(StoreMismatch, match=rf"weights_sha256: {a} has 'none', {other}"):
        stage.merge_shards([a, other], tmp_path / "m.h5", provenance={})
    # same network and weights, other options: rows put on the timeline another way, never mixed in one store
    retimed = _shard(tmp_path / "retimed.h5", {"c4": 5}, timeline="other window")
    with pytest.raises(StoreMismatch, match=rf"timeline: {a} has 't', {retimed} has 'other window'"):
        stage.merge_shards([a, retimed], tmp_path / "m.h5", provenance={})
    options = _shard(tmp_path / "options.h5", {"c5": 5}, config_hash="y")
    with pytest.raises(StoreMismatch, match=rf"config_hash: {a} has 'x', {options} has 'y'"):
        stage.merge_shards([a, options], tmp_path / "m.h5", provenance={})
    dup = _shard(tmp_path / "dup.h5", {"c1": 5})
    with pytest.raises(InputError, match=rf"clip c1 is in two shards: {a} and {dup}"):
        stage.merge_shards([a, dup], tmp_path / "m.h5", provenance={})
    with pytest.raises(InputError, match="no shard holds clip.*c9"):
        stage.merge_shards([a], tmp_path / "m.h5", provenance={}, clips=["c1", "c9"])
    with pytest.raises(StoreMismatch, match="backbone is '_test_mean' but the merge is for 'fer'"):
        stage.merge_shards([a], tmp_path / "m.h5", provenance={}, backbone="fer")
    assert not (tmp_path / "m.h5").exists()


# ----------------------------------------------------------------------------------------------------- reader


def test_reader_is_lazy_picklable_loads_in_memory_and_refuses_mismatches(tmp_path):
    path = _shard(tmp_path / "s.h5", {"c1": 6, "c2": 4}, sha="a" * 64)
    store = FeatureStore(path, modality="visual", backbone="_test_mean", weights_sha256="a" * 64, width=4)
    assert store._file is None  # nothing opened until the first read
    feats, valid = store.read("c1", 2, 5)
    assert feats.shape == (3, 4) and valid.shape == (3,)
    clone = pickle.loads(pickle.dumps(store))
    assert clone._file is None
    np.testing.assert_array_equal(clone.read("c1", 2, 5)[0], feats)
    mem = FeatureStore(path, in_memory=True)
    np.testing.assert_array_equal(mem.read("c1", 2, 5)[0], feats)
    for kwargs, attr in (
        ({"backbone": "fer"}, "backbone"),
        ({"weights_sha256": "b" * 64}, "weights_sha256"),
        ({"modality": "audio"}, "modality"),
        ({"schema_version": 2}, "schema_version"),
        ({"width": 5}, "width"),
    ):
        with pytest.raises(StoreMismatch, match=rf"{path}: {attr} is"):
            FeatureStore(path, **kwargs)
    with pytest.raises(InputError, match="has no clip 'c3'"):
        store.read("c3")
    # A forked worker (DataLoader) inherits the parent's open handle and datasets but reads through its own.
    import multiprocessing

    global _INHERITED
    _INHERITED = store  # not an argument: the child must use the object fork copied, open handle and all
    assert store._file is not None and store._datasets
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child_rows, child_pid = pool.apply(_read_inherited, ("c1",))
    np.testing.assert_array_equal(child_rows, store.read("c1")[0])
    assert store._pid != child_pid
    store.close()


_INHERITED = None


def _read_inherited(clip):
    import os

    rows = _INHERITED.read(clip)[0]
    assert _INHERITED._pid == os.getpid()  # reopened in the child
    return rows, _INHERITED._pid


# ------------------------------------------------------------------------------------------------------- rows


def test_nan_from_a_backbone_is_refused_before_writing():
    from emofusion.errors import EmofusionError
    from emofusion.features.store import check_rows

    backbone = build_backbone("audio", "logmel")
    wav = np.zeros(SR, np.float32)
    wav[8000:8100] = np.nan  # a corrupt stretch reaches the backbone
    feats = backbone.embed(wav, SR, times_of(wav))
    assert not np.isfinite(feats).all()
    with pytest.raises(EmofusionError, match=r"backbone logmel gave NaN or inf features for clip c1 at \d+ frame"):
        check_rows(feats, np.ones(len(feats), bool), clip="c1", backbone="logmel", width=backbone.width)
