"""Evaluation: one prediction per frame, CCC per split as PROTOCOL.md, smoothing chosen on held-out data only."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from emofusion.errors import ConfigError
from emofusion.evaluation.smoothing import choose_window, halves, moving_average
from emofusion.evaluation.stage import evaluate_run
from emofusion.features.store import StoreMismatch, store_attrs, write_store
from emofusion.metrics import ccc
from emofusion.provenance import file_sha256
from emofusion.training.stage import train_run
from fusion_corpus import experiment, make_corpus

CPU = torch.device("cpu")
SMOOTHING = {"windows": [1, 5, 11, 21]}


def test_moving_average_is_centred_with_nearest_value_edges():
    x = np.array([1.0, 2.0, 3.0, 10.0, 5.0])
    out = moving_average(x, 3)
    padded = np.concatenate([[1.0], x, [5.0]])
    np.testing.assert_allclose(out, [padded[i : i + 3].mean() for i in range(5)])
    np.testing.assert_allclose(moving_average(np.full(7, 0.3), 5), 0.3)  # no zero padding pulling the edges
    np.testing.assert_array_equal(moving_average(x, 1), x)
    two = np.stack([x, -x], axis=1)
    np.testing.assert_allclose(moving_average(two, 3)[:, 1], -out)
    with pytest.raises(ConfigError, match="fusion.smoothing.windows: 4 is even"):
        moving_average(x, 4)


def test_choose_window_prefers_smoothing_noisy_predictions_and_none_for_clean_ones():
    rng = np.random.default_rng(0)
    t = np.arange(600)
    y = np.stack([np.sin(t / 40), np.cos(t / 30)], axis=1).astype(np.float32)
    labels = {"c": (y, np.ones_like(y, bool))}
    noisy = {"c": y + rng.normal(0, 0.5, y.shape).astype(np.float32)}
    chosen = choose_window(noisy, labels, [1, 5, 11, 21])
    assert chosen["valence"] > 1 and chosen["arousal"] > 1
    assert choose_window({"c": y.copy()}, labels, [1, 5, 11, 21]) == {"valence": 1, "arousal": 1}


def test_halves_keep_a_videos_clips_together():
    video_of = {"v1_left": "v1", "v1_right": "v1", "v2": "v2", "v3": "v3"}
    a, b = halves(sorted(video_of), video_of)
    assert {"v1_left", "v1_right"} <= set(a) or {"v1_left", "v1_right"} <= set(b)
    assert sorted(a + b) == sorted(video_of) and a and b


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval")
    corpus = make_corpus(root / "corpus")
    exp = experiment("early_fusion", epochs=3, window=32, steps=8, pool=2, train_hop=8, hop=24)
    stores = {m: corpus["stores"][m] for m in exp["stores"]}
    manifest = pd.read_parquet(corpus["manifest"])
    run = root / "run"
    train_run(exp, fold=0, seed=0, out=run, manifest=manifest, labels=corpus["labels"], stores=stores, device=CPU)
    metrics = evaluate_run(
        run, run, manifest=manifest, labels=corpus["labels"], stores=stores, smoothing=SMOOTHING, device=CPU
    )
    return {"corpus": corpus, "run": run, "metrics": metrics, "manifest": manifest, "stores": stores}


def test_every_frame_of_every_clip_gets_one_prediction(trained):
    df = pd.read_parquet(trained["run"] / "predictions.parquet")
    manifest = trained["manifest"]
    assert list(df.columns) == [
        "clip",
        "split",
        "frame",
        "valence",
        "arousal",
        "valence_smoothed",
        "arousal_smoothed",
        "label_valence",
        "label_arousal",
        "valid_valence",
        "valid_arousal",
    ]
    counts = df.groupby("clip").size()
    assert counts.to_dict() == dict(zip(manifest["clip"], manifest["frames"], strict=True))
    for _, g in df.groupby("clip"):
        assert g["frame"].tolist() == list(range(len(g)))
    assert df["valence"].dtype == np.float32 and df["valid_arousal"].dtype == bool
    for col in ("valence", "arousal", "valence_smoothed", "arousal_smoothed"):
        assert df[col].between(-1, 1).all() and np.isfinite(df[col]).all()
    assert df.loc[~df["valid_valence"], "label_valence"].isna().all()
    assert df.loc[df["valid_valence"], "label_valence"].notna().all()
    assert set(df.loc[df["split"] == "test", "clip"]) == {"clip08", "clip09"}
    assert not df.loc[df["split"] == "test", "valid_valence"].any()


def test_metrics_are_the_protocols_ccc_of_the_written_predictions(trained):
    df = pd.read_parquet(trained["run"] / "predictions.parquet")
    m = json.loads((trained["run"] / "metrics.json").read_text())
    assert set(m["splits"]) == {"train", "validation"}  # test clips have no labels: predicted, never scored
    for split, s in m["splits"].items():
        d = df[df["split"] == split]
        for target in ("valence", "arousal"):
            valid = d[f"valid_{target}"].to_numpy()
            y = d[f"label_{target}"].to_numpy()
            assert s["raw"][target] == pytest.approx(ccc(d[target], np.nan_to_num(y), valid), abs=1e-9)
            assert s["smoothed"][target] == pytest.approx(
                ccc(d[f"{target}_smoothed"], np.nan_to_num(y), valid), abs=1e-9
            )
            for clip, g in d.groupby("clip"):
                v = g[f"valid_{target}"].to_numpy()
                assert s["per_clip"][clip][target] == pytest.approx(
                    ccc(g[target], np.nan_to_num(g[f"label_{target}"].to_numpy()), v), abs=1e-9
                )
        assert s["raw"]["mean"] == pytest.approx((s["raw"]["valence"] + s["raw"]["arousal"]) / 2)
        assert s["frames"] == int(d["valid_valence"].sum())
    assert m["splits"]["validation"]["raw"]["mean"] > 0.5  # the audio carries the labels
    # the checkpoint was chosen on the same frame-level validation CCC that evaluation reports
    run = json.loads((trained["run"] / "run.json").read_text())
    assert m["splits"]["validation"]["raw"]["mean"] == pytest.approx(run["best_val_ccc_mean"], abs=1e-9)
    assert m["smoothing"]["valence"] in SMOOTHING["windows"] and "cross-fitted" in m["smoothing"]["chosen_on"]
    for modality, info in m["stores"].items():
        assert info["sha256"] == file_sha256(trained["stores"][modality])
    assert m["provenance"]["seed"] == 0 and m["provenance"]["config_hash"] and m["best_epoch"] >= 0
    assert (m["experiment"], m["model"], m["fold"], m["seed"]) == ("early_fusion", "early_fusion", 0, 0)


def test_validation_smoothing_is_cross_fitted_on_the_other_half_of_its_videos(trained):
    df = pd.read_parquet(trained["run"] / "predictions.parquet")
    m = json.loads((trained["run"] / "metrics.json").read_text())
    video_of = dict(zip(trained["manifest"]["clip"], trained["manifest"]["video_id"], strict=True))
    d = df[df["split"] == "validation"]
    raw = {c: g[["valence", "arousal"]].to_numpy() for c, g in d.groupby("clip")}
    lab = {
        c: (
            np.nan_to_num(g[["label_valence", "label_arousal"]].to_numpy()),
            g[["valid_valence", "valid_arousal"]].to_numpy(),
        )
        for c, g in d.groupby("clip")
    }
    val = sorted(c for c in raw if lab[c][1].any())
    a, b = halves(val, video_of)
    assert a and b
    every = choose_window({c: raw[c] for c in val}, lab, SMOOTHING["windows"])
    assert every == {t: m["smoothing"][t] for t in ("valence", "arousal")}
    differs = False
    for fit, apply in ((a, b), (b, a)):
        chosen = choose_window({c: raw[c] for c in fit}, lab, SMOOTHING["windows"])
        differs |= chosen != every
        for c in apply:
            g = d[d["clip"] == c]
            for target in ("valence", "arousal"):
                expected = np.clip(
                    moving_average(raw[c][:, ("valence", "arousal").index(target)], chosen[target]), -1, 1
                )
                np.testing.assert_allclose(g[f"{target}_smoothed"], expected, atol=1e-6, err_msg=f"{c} {target}")
    # otherwise choosing on all of validation would pass unnoticed
    assert differs, "both halves choose the all-validation windows; the fixture cannot tell cross-fitting apart"


def test_smoothing_of_train_and_test_uses_the_window_chosen_on_validation(trained):
    df = pd.read_parquet(trained["run"] / "predictions.parquet")
    m = json.loads((trained["run"] / "metrics.json").read_text())
    for clip in ("clip00", "clip08"):  # a train and a test clip
        g = df[df["clip"] == clip]
        expected = moving_average(g["valence"].to_numpy(), m["smoothing"]["valence"])
        np.testing.assert_allclose(g["valence_smoothed"], np.clip(expected, -1, 1), atol=1e-6)


def test_evaluate_command_reads_the_runs_stores_unless_a_store_option_replaces_one(trained, tmp_path, caplog):
    import logging
    import shutil

    from emofusion.cli import main

    copy = tmp_path / "audio_copy.h5"
    shutil.copy(trained["stores"]["audio"], copy)
    base = [
        "evaluate",
        "--config-json",
        json.dumps({"fusion": {"device": "cpu", "smoothing": SMOOTHING}}),
        "--run",
        str(trained["run"]),
        "--manifest",
        str(trained["corpus"]["manifest"]),
        "--labels",
        str(trained["corpus"]["labels"]),
    ]
    assert main([*base, "--store", f"audio={copy}", "--out", str(tmp_path / "out")]) == 0
    stores = json.loads((tmp_path / "out" / "metrics.json").read_text())["stores"]
    assert {m: v["path"] for m, v in stores.items()} == {
        **{m: str(p) for m, p in trained["stores"].items()},
        "audio": str(copy),
    }
    for bad, why in (("text=t.h5", "reads only"), ("audio", "expected MODALITY=PATH")):
        with caplog.at_level(logging.ERROR, logger="emofusion"):
            assert main([*base, "--store", bad, "--out", str(tmp_path / "bad")]) == 1
        assert why in caplog.text
    assert not (tmp_path / "bad").exists()


def test_a_malformed_checkpoint_is_an_input_error_naming_the_runs_file(trained, tmp_path):
    import shutil

    from emofusion.errors import InputError
    from emofusion.models.checkpoint import read_checkpoint

    ckpt = read_checkpoint(trained["run"] / "model.pt")
    broken = {
        "not torch": None,
        "foreign": {"weights": torch.zeros(2)},
        "wrong weights": {**ckpt, "state_dict": {k: v for k, v in list(ckpt["state_dict"].items())[1:]}},
        "no normaliser": {**ckpt, "extra": {k: v for k, v in ckpt["extra"].items() if k != "normaliser"}},
    }
    for name, content in broken.items():
        run = tmp_path / name.replace(" ", "_")
        run.mkdir()
        shutil.copy(trained["run"] / "run.json", run / "run.json")
        if content is None:
            (run / "model.pt").write_bytes(b"not a checkpoint at all")
        else:
            torch.save(content, run / "model.pt")
        with pytest.raises(InputError, match=re.escape(f"{run / 'model.pt'} is not a usable emofusion checkpoint")):
            evaluate_run(
                run,
                run / "out",
                manifest=trained["manifest"],
                labels=trained["corpus"]["labels"],
                stores=trained["stores"],
                smoothing=SMOOTHING,
                device=CPU,
            )
        assert not (run / "out").exists()


def test_evaluation_refuses_a_store_rebuilt_with_other_weights(trained, tmp_path):
    import h5py

    src = trained["stores"]["audio"]
    with h5py.File(src) as f:
        items = [(c, f[c]["features"][:], f[c]["valid"][:], 30.0) for c in f]
    write_store(
        tmp_path / "audio.h5",
        items,
        store_attrs(
            modality="audio",
            backbone="syntha",
            width=items[0][1].shape[1],
            native_rate=0.0,
            timeline="t",
            weights_sha256="0123abcd",
            weights_source="other weights",
            licence="l",
            provenance={},
        ),
    )
    with pytest.raises(StoreMismatch, match=r"audio\.h5: weights_sha256 is '0123abcd' but 'none' was asked for"):
        evaluate_run(
            trained["run"],
            tmp_path / "out",
            manifest=trained["manifest"],
            labels=trained["corpus"]["labels"],
            stores={**trained["stores"], "audio": tmp_path / "audio.h5"},
            smoothing=SMOOTHING,
            device=CPU,
        )
    assert not (tmp_path / "out").exists()


def test_a_clip_at_another_rate_is_evaluated_on_the_training_rates_grid(trained, tmp_path):
    """Issue 21 item 7: a run trained at 30 fps (run.json records it) meets one content at 60 and at 15 fps on the
    30 fps grid: the 60 fps copy (each row twice, what a 60 fps encoding of a 30 fps source holds) gets exactly the
    30 fps clip's predictions at the same times, raw and smoothed; the 15 fps copy (every other row) exactly those
    of a 30 fps clip showing each of its rows twice. A run without a recorded rate (before) counts frames."""
    from emofusion.features.store import FeatureStore, read_attrs
    from emofusion.labels import write_labels

    run = trained["run"]
    assert json.loads((run / "run.json").read_text())["rate"] == 30.0
    manifest = trained["manifest"]
    src = manifest[manifest["clip"] == "clip09"].iloc[0]
    n = int(src["frames"])
    copies = {  # clip: (fps, rows of clip09)
        "copy60": (60.0, np.repeat(np.arange(n), 2)),
        "copy15": (15.0, np.arange(0, n, 2)),
        "held30": (30.0, np.repeat(np.arange(0, n, 2), 2)[:n]),
    }
    rows = [{**src.to_dict(), "clip": c, "video_id": c, "fps": f, "frames": len(r)} for c, (f, r) in copies.items()]
    new = pd.concat([manifest, pd.DataFrame(rows)], ignore_index=True)
    labels = tmp_path / "labels.h5"
    write_labels(new, labels, max_mismatch=0, provenance={"config": {}})
    stores = {}
    for m, path in trained["stores"].items():
        with FeatureStore(path) as store:
            items = [(c, *store.read(c), 30.0) for c in store]
            x, v = store.read("clip09")
        items += [(c, x[r], v[r], f) for c, (f, r) in copies.items()]
        stores[m] = tmp_path / f"{m}.h5"
        write_store(stores[m], items, read_attrs(path))

    def predictions(run_dir, in_memory=None):
        evaluate_run(
            run_dir,
            run_dir,
            manifest=new,
            labels=labels,
            stores=stores,
            smoothing=SMOOTHING,
            device=CPU,
            in_memory=in_memory,
        )
        df = pd.read_parquet(run_dir / "predictions.parquet")
        cols = ["valence", "arousal", "valence_smoothed", "arousal_smoothed"]
        return {c: df[df["clip"] == c][cols].to_numpy() for c in ("clip09", *copies)}

    out = tmp_path / "run"
    out.mkdir()
    for name in ("model.pt", "run.json"):
        (out / name).write_bytes((run / name).read_bytes())
    p = predictions(out)
    assert len(p["copy60"]) == 2 * n and len(p["copy15"]) == n // 2
    np.testing.assert_array_equal(p["copy60"][0::2], p["clip09"])
    np.testing.assert_array_equal(p["copy60"][1::2], p["clip09"])  # a frame takes the grid row at or before it
    np.testing.assert_array_equal(p["copy15"], p["held30"][0::2])
    # the clips at the rate are what they were: the test clip's rows as the fixture's evaluation wrote them
    before = pd.read_parquet(run / "predictions.parquet")
    np.testing.assert_array_equal(before[before["clip"] == "clip09"]["valence"].to_numpy(), p["clip09"][:, 0])
    lazy = predictions(out, in_memory=False)  # windows read from the stores: each grid window's frames
    assert all(np.array_equal(lazy[c], p[c]) for c in p)

    info = json.loads((out / "run.json").read_text())
    del info["rate"]  # a run from before rates were recorded: frames counted, the 60 fps copy gets half the context
    (out / "run.json").write_text(json.dumps(info))
    old = predictions(out)
    np.testing.assert_array_equal(old["clip09"], p["clip09"])
    assert np.abs(old["copy60"][0::2] - p["clip09"]).max() > 0.01
