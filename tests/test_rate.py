"""A model meets the rate it was trained at (issue 21, item 7): windows and smoothing span seconds, not frames.

One content (feature rows that are a smooth function of time) at 15, 30 and 60 fps, and at a variable rate,
through predict's model-running code with an untrained but seeded model trained "at 30 fps": the same
predictions at the same times. A clip at the training rate, and any clip of a model that recorded no rate, takes
today's path bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from emofusion.fusion_data.windows import Windowing, at_rate, grid_of_frames, rate_grid, training_rate

WIDTH = 6
DURATION = 12.0  # seconds
# A 60 fps copy holds every row of the 30 fps grid: equal up to float rounding. A 15 fps copy lacks every other
# grid row and holds the row before (1/30 s earlier): a feature of period >= 8 s moves at most 2 pi / 8 / 30 =
# 0.026 of its amplitude in that time, and the untrained model's outputs then differ by up to about 0.06
# (measured: 0.058 raw, 0.047 smoothed). Today's frame counts are off by whole windows: 0.25 (60 fps) and 0.37
# (15 fps) on the same content (the last assertion of the test).
TOLERANCE = {60: 1e-6, 15: 0.07}


def _content(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, WIDTH): sinusoids of periods 8-20 s (emotions change over seconds); invalid (no face, say)
    from 5.0 s to 5.5 s."""
    periods = np.linspace(8.0, 20.0, WIDTH)
    phases = np.linspace(0.0, 2.0, WIDTH)
    x = np.sin(2 * np.pi * times[:, None] / periods[None, :] + phases[None, :]).astype(np.float32)
    valid = ~((times >= 5.0) & (times < 5.5))
    return x, valid


def _model():
    import torch

    from emofusion.training.stage import build_fusion_model
    from fusion_corpus import experiment

    exp = experiment(
        "unimodal",
        modalities=("audio",),
        model_options={"lstm_layers": 1, "head_hidden": 8},
        window=64,
        steps=8,
        pool=4,
        hop=32,
    )
    torch.manual_seed(0)
    net = build_fusion_model(exp, {"audio": WIDTH}, 8)
    net.eval()
    extra = {
        "weights_sha256": {},
        "normaliser": {"audio": {"mean": torch.zeros(WIDTH), "std": torch.ones(WIDTH)}},
    }
    return net, exp, extra


def _recipe(exp, rate):
    windowing = Windowing.from_training(exp["training"], key="test")
    return {
        "experiment_config": exp,
        "windowing": {**asdict(windowing), "rate": rate} if rate is not None else asdict(windowing),
        "backbones": {"audio": {"name": "syntha"}},
        "smoothing": {"valence": 9, "arousal": 15},
    }


def _predict(times: np.ndarray, rate: float | None):
    import torch

    from emofusion.predict.network import run_model

    net, exp, extra = _model()
    return run_model(
        net,
        _recipe(exp, rate),
        extra,
        {"audio": _content(times)},
        "video",
        len(times),
        times,
        device=torch.device("cpu"),
    )


def _times(fps: float) -> np.ndarray:
    return np.arange(round(DURATION * fps)) / fps


def test_one_content_at_15_30_and_60_fps_gives_the_same_predictions_at_the_same_times():
    out = {fps: _predict(_times(fps), 30.0) for fps in (15, 30, 60)}
    step = {15: 1, 30: 2, 60: 4}  # frames at the times of the 15 fps copy: 0, 1/15, 2/15, ... s
    n = len(_times(15))
    for fps in (15, 60):
        for k in (0, 1):  # raw and smoothed
            a = out[30][k][:: step[30]][:n]
            b = out[fps][k][:: step[fps]][:n]
            assert a.shape == b.shape == (n, 2)
            assert np.abs(a - b).max() < TOLERANCE[fps], (fps, k, np.abs(a - b).max())
    # every frame of the 60 fps copy takes the grid sample at or before its time: frame 2k + 1 = frame 2k
    assert np.array_equal(out[60][0][1::2], out[60][0][0::2])
    # today's code (a model without a recorded rate) counts frames: the 60 fps copy gets half the context, the
    # 15 fps one twice as much
    for fps in (15, 60):
        old = _predict(_times(fps), None)
        assert np.abs(old[0][:: step[fps]][:n] - out[30][0][::2][:n]).max() > 3 * TOLERANCE[15]


def test_a_variable_rate_clip_meets_the_model_on_the_training_grid():
    # 6 s at 24 fps, then 6 s at 12 fps (the VFR clip), decoder times rounded to milliseconds
    times = np.round(np.concatenate([np.arange(144) / 24, 6 + np.arange(72) / 12]), 3)
    assert not at_rate(times, 30.0)
    vfr = _predict(times, 30.0)
    ref = _predict(_times(30), 30.0)
    assert vfr[0].shape == (216, 2)
    # the frames that fall on the 30 fps grid (every 1/6 s: 4 frames at 24 fps, 2 at 12 fps) match the 30 fps copy
    on_grid = np.flatnonzero(np.abs(times * 30 - np.round(times * 30)) < 0.05)  # times rounded to ms
    assert len(on_grid) == 72
    for k in (0, 1):
        assert np.abs(vfr[k][on_grid] - ref[k][np.round(times[on_grid] * 30).astype(int)]).max() < TOLERANCE[15]


def test_a_clip_at_the_training_rate_takes_todays_path_bit_for_bit():
    times = _times(30)
    assert at_rate(times, 30.0)
    new = _predict(times, 30.0)
    old = _predict(times, None)  # a recipe without a rate: frames as they are
    assert all(np.array_equal(a, b) for a, b in zip(new, old, strict=True))
    # a model without a recorded rate takes every clip as it is, whatever its rate
    assert at_rate(_times(60), None)


def test_the_grid_takes_the_latest_frame_at_or_before_each_time_and_gives_it_back():
    times = np.array([0.0, 0.05, 0.1, 0.2, 0.4])  # irregular; the last frame lasts 0.2 s as the one before it
    grid, source = rate_grid(times, 10.0)
    assert np.allclose(grid, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert source.tolist() == [0, 2, 3, 3, 4, 4]  # 0.3 s: the frame shown since 0.2 s
    assert grid_of_frames(times, grid, 10.0).tolist() == [0, 0, 1, 2, 4]
    # decoder times rounded to milliseconds (Matroska), before or after the grid time, still count as on it
    grid, source = rate_grid(np.array([0.0, 0.0333, 0.0667, 0.1]), 30.0)
    assert source.tolist() == [0, 1, 2, 3]
    times = np.round(np.arange(12) / 60, 3)  # 0.017, 0.033, 0.05, 0.067 ...
    grid, source = rate_grid(times, 60.0)
    assert source.tolist() == list(range(12)) and grid_of_frames(times, grid, 60.0).tolist() == list(range(12))


@pytest.mark.parametrize(("fps", "want"), [([30.0, 30.0, 25.0], 30.0), ([], None), ([0.0, float("nan")], None)])
def test_the_training_rate_is_the_median_rate_of_the_training_clips(fps, want):
    assert training_rate(fps) == want


def test_training_holds_a_clip_at_another_rate_on_the_training_grid_and_records_the_rate(tmp_path):
    import pandas as pd
    import torch

    from emofusion.evaluation.stage import evaluate_run
    from emofusion.training.stage import train_run
    from fusion_corpus import experiment, fold_data, make_corpus

    corpus = make_corpus(tmp_path / "corpus")
    manifest = pd.read_parquet(corpus["manifest"])
    clip = manifest[manifest["split"] == "train"]["clip"].iloc[0]
    n = int(manifest.loc[manifest["clip"] == clip, "frames"].iloc[0])
    manifest.loc[manifest["clip"] == clip, "fps"] = 15.0  # the same rows, said to be 15 fps
    exp = experiment("early_fusion", epochs=1, window=32, steps=8, pool=2, train_hop=8, hop=24)
    stores = {m: corpus["stores"][m] for m in exp["stores"]}
    kw = {"labels": corpus["labels"], "stores": stores, "backbones": exp["stores"], "fold": 0}
    windowing = Windowing.from_training(exp["training"], key="test")
    data = fold_data(manifest, windowing=windowing, rate="train", **kw)
    assert data.windowing.rate == 30.0  # the median of the training clips' rates
    assert data.frames[clip] == 2 * n  # each 15 fps frame held for two rows of the 30 fps grid
    y, valid = data.frame_labels(clip)
    i = data.clips.index(clip)
    grid_labels = data.labels[data.offsets[i] : data.offsets[i + 1]]
    np.testing.assert_array_equal(grid_labels, np.repeat(y, 2, axis=0))
    np.testing.assert_array_equal(data.label_valid[data.offsets[i] : data.offsets[i + 1]], np.repeat(valid, 2, axis=0))
    assert data.to_frames(clip, grid_labels).shape == (n, 2)
    plain = fold_data(manifest, windowing=windowing, **kw)  # no rate asked: frames as they are
    assert plain.frames[clip] == n and plain.windowing.rate is None

    run = tmp_path / "run"
    cpu = torch.device("cpu")
    train_run(exp, fold=0, seed=0, out=run, manifest=manifest, labels=corpus["labels"], stores=stores, device=cpu)
    assert json.loads((run / "run.json").read_text())["rate"] == 30.0
    evaluate_run(
        run, run, manifest=manifest, labels=corpus["labels"], stores=stores, smoothing={"windows": [1, 5]}, device=cpu
    )
    df = pd.read_parquet(run / "predictions.parquet")
    assert (df.groupby("clip").size() == manifest.set_index("clip")["frames"]).all()
