"""benchmarks/real_va.py: its label reading refuses bad folders, and a smoke run on real speech gives the table."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from conftest import REPO, SHARED_DATA
from emofusion.errors import InputError

SPEECH = SHARED_DATA / "speech_emotion_va"


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


@pytest.mark.slow
def test_smoke_run_on_real_speech(tmp_path):
    if not (SPEECH / "arousal.csv").is_file():
        pytest.skip(f"{SPEECH} is not there (../shared/data)")
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
