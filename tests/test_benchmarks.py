"""benchmarks/real_va.py: its label reading refuses bad folders, and a smoke run on real speech gives the table."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from conftest import REPO, TEST_DATA
from emofusion.errors import InputError

SPEECH = TEST_DATA / "speech_emotion_va"  # the first 12 recordings


@pytest.fixture(autouse=True)
def _torch_state():
    """main() sets torch's threads and deterministic mode for its process; give the test session its own back."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def load_real_va():
    spec = importlib.util.spec_from_file_location("real_va", REPO / "benchmarks" / "real_va.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_labels_must_name_the_same_recordings(tmp_path):
    real_va = load_real_va()
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "arousal.csv").write_text("a.wav,0.5\n")
    with pytest.raises(InputError, match="valence.csv does not exist"):
        real_va.read_labels(tmp_path)
    (tmp_path / "valence.csv").write_text("b.wav,0.1\n")
    with pytest.raises(InputError, match="list different files"):
        real_va.read_labels(tmp_path)
    (tmp_path / "valence.csv").write_text("a.wav,0.1\n")
    files, y = real_va.read_labels(tmp_path)
    assert files == ["a.wav"] and y.tolist() == [[0.1, 0.5]]  # TARGETS order: valence, arousal


def test_neural_is_seeded_and_never_sees_held_out_labels():
    real_va = load_real_va()
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 6)).astype(np.float32) for n in rng.integers(4, 10, size=10)]
    y = rng.uniform(-1, 1, size=(10, 2))
    folds = real_va.split(10, 2, 0)
    training = {"optimizer": "adam", "lr": 0.003, "weight_decay": 0.0, "batch_size": 4, "grad_clip": 1.0}

    def run(labels, seed=0):
        return real_va.neural(seqs, labels, folds, seed=seed, model_name="unimodal_audio", epochs=1,
                              training=training)

    utt, frames = run(y)
    assert utt.shape == (10, 2) and [len(f) for f in frames] == [len(s) for s in seqs]
    np.testing.assert_allclose(utt, np.stack([f.mean(axis=0) for f in frames]))
    np.testing.assert_array_equal(run(y)[0], utt)  # seeded
    assert not np.array_equal(run(y, seed=1)[0], utt)
    held_out = folds[0][1]
    flipped = y.copy()
    flipped[held_out] *= -1  # the held-out fold's labels must not reach its own predictions
    np.testing.assert_array_equal(run(flipped)[0][held_out], utt[held_out])
    mean = real_va.mean_predictor(y, folds)
    np.testing.assert_allclose(mean[held_out], np.broadcast_to(y[folds[0][0]].mean(axis=0), (len(held_out), 2)))


@pytest.mark.slow
def test_smoke_run_on_real_speech(tmp_path):
    out = tmp_path / "real_va.json"
    result = load_real_va().main(["--data", str(SPEECH), "--folds", "2", "--seeds", "1", "--epochs", "1",
                                  "--limit", "12", "--out", str(out)])
    methods = result["methods"]
    assert len(methods) == 3 and result["config"]["recordings"] == 12
    for row in methods.values():
        for key in ("arousal", "valence", "frame_arousal", "frame_valence"):
            assert math.isfinite(row["mean"][key]) and -1.0 <= row["mean"][key] <= 1.0
    # eGeMAPS carries arousal: even 6 training recordings give the ridge a clearly positive out-of-fold CCC
    assert methods["ridge on pooled features"]["mean"]["arousal"] > 0.3
    written = json.loads(out.read_text())
    assert written["provenance"]["config_hash"] and written["methods"].keys() == methods.keys()
