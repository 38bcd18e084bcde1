"""Fusion training: experiments from config, windowing, fold data (masks, normalisation, checks), the loop, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from emofusion.config import validate_config
from emofusion.errors import ConfigError, InputError
from emofusion.features.store import StoreMismatch, store_attrs, write_store
from emofusion.fusion_data.windows import Windowing, reassemble, windows_for
from emofusion.training.experiments import experiment_section, grid, resolve_experiment
from emofusion.training.stage import build_fusion_model, train_run
from fusion_corpus import BACKBONES, WIDTHS, experiment, make_corpus
from fusion_corpus import fold_data as assemble

CPU = torch.device("cpu")
SMALL = {"window": 32, "steps": 8, "pool": 2, "train_hop": 8}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    torch.set_num_threads(1)
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def fold_data(corpus, *, modalities=("visual", "audio"), fold=0, **kw):
    w = Windowing.from_training({**SMALL, "hop": kw.pop("hop", None)}, key="t")
    return assemble(
        pd.read_parquet(corpus["manifest"]),
        labels=corpus["labels"],
        stores={m: corpus["stores"][m] for m in modalities},
        backbones={m: BACKBONES[m] for m in modalities},
        fold=fold,
        windowing=w,
        **kw,
    )


# --- experiments ------------------------------------------------------------------------------------------------
def test_experiment_merges_preset_and_overrides_and_names_bad_keys():
    fusion = validate_config(
        {
            "fusion": {
                "experiments": {
                    "a": {"model": "rjca", "preset": "rjca", "training": {"lr": 0.01}},
                    "b": {"model": "dca", "preset": "dca"},
                }
            }
        }
    )["fusion"]
    a = resolve_experiment(fusion, "a")
    assert a["training"]["lr"] == 0.01 and a["training"]["window"] == 512 and a["training"]["batch_size"] == 64
    assert resolve_experiment(fusion, "b")["training"]["optimizer"] == "adamw"
    section = experiment_section(fusion, "a")["fusion"]
    assert list(section["experiments"]) == ["a"] and list(section["presets"]) == ["rjca"]
    assert validate_config(experiment_section(fusion, "a"))["fusion"]["experiments"]["a"]["model"] == "rjca"
    assert grid({**fusion, "folds": [0, 2], "seeds": [1]}) == [("a", 0, 1), ("a", 2, 1), ("b", 0, 1), ("b", 2, 1)]
    # a config's own preset is added to the built-in ones, which stay usable
    mine = validate_config(
        {
            "fusion": {
                "presets": {"mine": {"epochs": 3}},
                "experiments": {"a": {"model": "rjca", "preset": "mine"}, "b": {"model": "rjca", "preset": "rjcma"}},
            }
        }
    )["fusion"]
    assert resolve_experiment(mine, "a")["training"]["epochs"] == 3
    assert resolve_experiment(mine, "b")["training"]["window"] == 300
    assert experiment_section(mine, "b")["fusion"]["presets"]["rjcma"]["hop"] == 200
    fusion["experiments"]["a"]["training"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"fusion.experiments.a.training.lr"):
        resolve_experiment(fusion, "a")
    fusion["experiments"]["a"]["preset"] = "nope"
    with pytest.raises(ConfigError, match=r"fusion.experiments.a.preset: no preset 'nope'"):
        resolve_experiment(fusion, "a")
    with pytest.raises(ConfigError, match=r"fusion.experiments.x.training: Additional|fusion.experiments.x.training"):
        validate_config({"fusion": {"experiments": {"x": {"model": "rjca", "training": {"lrr": 1}}}}})
    with pytest.raises(ConfigError, match="fusion.experiments"):
        validate_config({"fusion": {"experiments": {"../up": {"model": "rjca"}}}})


def test_repo_config_builds_every_family():
    """The default config's experiments cover every registered model family and build at the demo's widths."""
    from conftest import REPO
    from emofusion.config import load_config
    from emofusion.models import list_models

    fusion = load_config(REPO / "config.yaml")["fusion"]
    families = set()
    for name in fusion["experiments"]:
        exp = resolve_experiment(fusion, name)
        w = Windowing.from_training(exp["training"], key=name)
        model = build_fusion_model(exp, {m: 16 + i for i, m in enumerate(exp["stores"])}, w.steps)
        families.add(model.model_name)
    assert families == set(list_models())


# --- windowing --------------------------------------------------------------------------------------------------
def test_published_clip_level_windowing():
    w = Windowing.from_training({"window": 512, "steps": 16, "pool": 8}, key="k")
    pooled = w.pooled_frames()
    assert pooled.shape == (16, 8) and w.sub == 32
    assert pooled[0].tolist() == [3, 7, 11, 15, 19, 23, 27, 31]  # every 4th, ending at the step's last frame
    assert pooled[1, -1] == 63 and w.label_frames()[-1] == 511
    assert w.starts(512).tolist() == [0] and w.starts(513).tolist() == [0, 512] and w.starts(10).tolist() == [0]
    f = Windowing.from_training({"window": 300, "hop": 200, "steps": 300, "pool": 1}, key="k")
    assert f.starts(700).tolist() == [0, 200, 400] and f.pooled_frames()[:, 0].tolist() == list(range(300))


@pytest.mark.parametrize(
    ("training", "match"),
    [
        ({"window": 100, "steps": 16, "pool": 1}, r"k: window 100 is not a multiple of steps 16"),
        ({"window": 64, "steps": 16, "pool": 3}, r"k: pool 3 does not divide the 4 frames"),
        ({"window": 64, "steps": 16, "pool": 2, "hop": 65}, r"k: hop 65 is larger than window 64"),
    ],
)
def test_windowing_that_does_not_fit_names_the_key(training, match):
    with pytest.raises(ConfigError, match=match):
        Windowing.from_training(training, key="k")


def test_reassemble_gives_every_frame_one_averaged_prediction():
    w = Windowing.from_training({"window": 8, "hop": 4, "steps": 4, "pool": 1}, key="k")
    frames = {"a": 13, "b": 3}
    clips = ["a", "b"]
    windows = windows_for(frames, clips, w, w.hop)
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(len(windows), 4, 2))
    out = reassemble(steps, windows, clips, frames, w)
    # brute force: a loop over windows and frames
    for ci, c in enumerate(clips):
        sums, counts = np.zeros((frames[c], 2)), np.zeros(frames[c])
        for (wc, start), s in zip(windows, steps, strict=True):
            if wc != ci:
                continue
            for j in range(w.window):
                if start + j < frames[c]:
                    sums[start + j] += s[j // w.sub]
                    counts[start + j] += 1
        assert (counts > 0).all()
        np.testing.assert_allclose(out[c], sums / counts[:, None], rtol=1e-6)
        assert out[c].shape == (frames[c], 2)


# --- data ---------------------------------------------------------------------------------------------------------
def test_batches_carry_masks_and_pooled_features(corpus):
    data = fold_data(corpus)
    clip = "clip00"
    windows = data.windows([clip], 32)
    batch = data.batch(windows)
    assert batch["feats"]["visual"].shape == (len(windows), 8, WIDTHS["visual"])
    assert batch["target"].shape == batch["target_mask"].shape == (len(windows), 8, 2)
    n = data.frames[clip]
    with h5py.File(corpus["stores"]["visual"]) as f:
        raw, valid = f[clip]["features"][:], f[clip]["valid"][:]
    mean, std = data.normaliser.mean["visual"], data.normaliser.std["visual"]
    for b, (_, start) in enumerate(windows):
        for s in range(8):
            idx = start + s * 4 + np.array([1, 3])  # pool 2 of 4 frames per step, ending at its last
            inside = idx[idx < n]
            ok = inside[valid[inside]]
            assert bool(batch["masks"]["visual"][b, s]) == (len(ok) > 0)
            if len(ok):
                np.testing.assert_allclose(batch["feats"]["visual"][b, s], ((raw[ok] - mean) / std).mean(0), atol=1e-5)
            last = start + s * 4 + 3
            labelled = last < n and corpus["values"][clip][last, 0] != -5
            assert bool(batch["target_mask"][b, s, 0]) == labelled
            if labelled:
                assert float(batch["target"][b, s, 0]) == pytest.approx(corpus["values"][clip][last, 0], abs=1e-4)
    assert not batch["target_mask"][-1, -1].any()  # the last window runs past the clip's end: padding
    assert not batch["masks"]["visual"].all()  # the faceless gap is masked


def test_lazy_batches_equal_in_memory_batches(corpus):
    mem, lazy = fold_data(corpus, in_memory=True), fold_data(corpus, in_memory=False)
    assert mem.in_memory and not lazy.in_memory
    windows = mem.windows(mem.clips, 24)
    a, b = mem.batch(windows), lazy.batch(windows)
    for m in ("visual", "audio"):
        torch.testing.assert_close(a["feats"][m], b["feats"][m])
        assert torch.equal(a["masks"][m], b["masks"][m])
    assert torch.equal(a["target_mask"], b["target_mask"])


def test_features_in_memory_without_labels_give_the_stores_batches_with_every_label_invalid(corpus):
    """The fold data predict builds: features already in memory, no labels store. Its batches are the stores'
    bit for bit (same normaliser), and every step's label is unannotated."""
    from emofusion.features.store import FeatureStore
    from emofusion.fusion_data.clips import FoldClips
    from emofusion.fusion_data.data import FusionData
    from emofusion.fusion_data.sources import MemoryFeatures, check_coverage

    stored = fold_data(corpus, in_memory=True)
    table = FoldClips(pd.read_parquet(corpus["manifest"]), fold=0, windowing=stored.windowing)
    rows = {}
    for m in ("audio", "visual"):  # in another order than the models': the fold data orders them
        with FeatureStore(corpus["stores"][m]) as store:
            rows[m] = {c: store.read(c) for c in store}
    sources = {m: MemoryFeatures(m, rows[m], width=WIDTHS[m]) for m in rows}
    memory = FusionData(table, sources, normaliser=stored.normaliser)
    assert memory.modalities == ["visual", "audio"] and memory.in_memory
    windows = stored.windows(stored.clips, 24)
    a, b = stored.batch(windows), memory.batch(windows)
    for m in ("visual", "audio"):
        assert torch.equal(a["feats"][m], b["feats"][m]) and torch.equal(a["masks"][m], b["masks"][m])
    assert a["target_mask"].any() and not b["target_mask"].any()
    assert (b["target"] == -5).all()
    short = MemoryFeatures("audio", {c: (x[:-1], v[:-1]) for c, (x, v) in rows["audio"].items()}, width=WIDTHS["audio"])
    with pytest.raises(InputError, match=r"the audio features in memory: clip 'clip00' has 149 rows but the manifest"):
        check_coverage(short, table)


def test_normalisation_is_fitted_on_the_folds_training_clips_only(corpus):
    for fold in (0, 1):
        data = fold_data(corpus, fold=fold)
        train = data.clips_of("train")
        with h5py.File(corpus["stores"]["audio"]) as f:
            rows = np.concatenate([f[c]["features"][:][f[c]["valid"][:]] for c in train])
        np.testing.assert_allclose(data.normaliser.mean["audio"], rows.mean(0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(data.normaliser.std["audio"], rows.std(0), rtol=1e-4)
    assert fold_data(corpus, fold=1).clips_of("validation") == ["clip00", "clip02", "clip04", "clip06"]


def _store(path: Path, corpus, *, backbone="synthv", drop=None, nan_at=None):
    items = []
    with h5py.File(corpus["stores"]["visual"]) as f:
        for c in f:
            if c != drop:
                items.append((c, f[c]["features"][:], f[c]["valid"][:], 30.0))
    attrs = store_attrs(
        modality="visual",
        backbone=backbone,
        width=WIDTHS["visual"],
        native_rate=0.0,
        timeline="t",
        weights_sha256="none",
        weights_source="s",
        licence="l",
        provenance={},
    )
    write_store(path, items, attrs)
    if nan_at:
        with h5py.File(path, "r+") as f:
            f[nan_at[0]]["features"][nan_at[1], 0] = np.nan  # write_store refuses NaN: put it in by hand
    return path


def test_bad_stores_are_refused_before_training(corpus, tmp_path):
    def load(path):
        return assemble(
            pd.read_parquet(corpus["manifest"]),
            labels=corpus["labels"],
            stores={"visual": path, "audio": corpus["stores"]["audio"]},
            backbones={"visual": "synthv", "audio": "syntha"},
            fold=0,
            windowing=Windowing.from_training(SMALL, key="k"),
        )

    with pytest.raises(StoreMismatch, match=r"other\.h5: backbone is 'other' but 'synthv'"):
        load(_store(tmp_path / "other.h5", corpus, backbone="other"))
    with pytest.raises(InputError, match=r"missing\.h5 lacks 1 clip\(s\) of the manifest \(first: 'clip03'\)"):
        load(_store(tmp_path / "missing.h5", corpus, drop="clip03"))
    with pytest.raises(InputError, match=r"nan\.h5: clip 'clip08' has NaN or inf features .* frame 17"):
        load(_store(tmp_path / "nan.h5", corpus, nan_at=("clip08", 17)))
    with pytest.raises(InputError, match=r"absent\.h5 does not exist"):
        load(tmp_path / "absent.h5")
    # A bad store is the first error, before the fold is looked at (the order the one FusionData had).
    with pytest.raises(InputError, match=r"absent\.h5 does not exist"):
        assemble(
            pd.read_parquet(corpus["manifest"]),
            labels=corpus["labels"],
            stores={"visual": tmp_path / "absent.h5", "audio": corpus["stores"]["audio"]},
            backbones={"visual": "synthv", "audio": "syntha"},
            fold=7,
            windowing=Windowing.from_training(SMALL, key="k"),
        )


def test_a_fold_without_valid_labels_is_refused(corpus, tmp_path):
    manifest = pd.read_parquet(corpus["manifest"])
    for row in manifest[manifest["split"] == "validation"].itertuples():
        Path(row.annotation).with_suffix(".blank").write_text("valence,arousal\n" + "-5,-5\n" * row.frames)
        manifest.loc[row.Index, "annotation"] = str(Path(row.annotation).with_suffix(".blank"))
    from emofusion.labels import write_labels

    write_labels(manifest, tmp_path / "labels.h5", max_mismatch=0, provenance={})
    with pytest.raises(ConfigError, match=r"fusion.folds: fold 0 has no valid label in its validation clips"):
        assemble(
            manifest,
            labels=tmp_path / "labels.h5",
            stores={"audio": corpus["stores"]["audio"]},
            backbones={"audio": "syntha"},
            fold=0,
            windowing=Windowing.from_training(SMALL, key="k"),
        )


def test_model_options_that_contradict_the_windowing_name_the_key():
    exp = experiment("rjca", model_options={"seq_len": 16}, **SMALL)
    with pytest.raises(ConfigError, match=r"fusion.experiments.rjca.model_options.seq_len is 16 but .* 8 steps"):
        build_fusion_model(exp, {"visual": 4, "audio": 4}, 8)
    exp = experiment("rjcma_published", **SMALL)
    with pytest.raises(ConfigError, match=r"model_options.n_targets is 1"):
        build_fusion_model(exp, {"visual": 4, "audio": 4}, 8)
    with pytest.raises(ConfigError, match=r"fusion.experiments.rjca: .*unknown config keys \['hiden'\]"):
        build_fusion_model(experiment("rjca", model_options={"hiden": 3}, **SMALL), {"visual": 4, "audio": 4}, 8)


# --- the loop -----------------------------------------------------------------------------------------------------
def train(corpus, out, exp, **kw):
    return train_run(
        exp,
        fold=0,
        seed=kw.pop("seed", 0),
        out=out,
        manifest=pd.read_parquet(corpus["manifest"]),
        labels=corpus["labels"],
        stores={m: corpus["stores"][m] for m in exp["stores"]},
        device=CPU,
        **kw,
    )


@pytest.mark.slow
def test_training_learns_and_writes_the_run_contract(corpus, tmp_path):
    """The audio carries the labels: a few epochs reach a high validation CCC; outputs follow the contract."""
    exp = experiment("early_fusion", epochs=5, **SMALL)
    info = train(corpus, tmp_path, exp)
    assert info["best_val_ccc_mean"] > 0.7, info["best_val_ccc_mean"]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(5))
    assert set(log[0]) == {
        "epoch",
        "train_loss",
        "val_loss",
        "val_ccc_valence",
        "val_ccc_arousal",
        "val_ccc_mean",
        "lr",
        "seconds",
    }
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert max(e["val_ccc_mean"] for e in log) == pytest.approx(info["best_val_ccc_mean"])
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    extra = ckpt["extra"]
    assert ckpt["model"] == "early_fusion" and extra["best_epoch"] == info["best_epoch"]
    assert set(extra["normaliser"]) == {"visual", "audio"} and extra["experiment"] == exp
    assert extra["run_provenance"]["seed"] == 0 and "git" in extra["run_provenance"]
    run = json.loads((tmp_path / "run.json").read_text())
    assert {"experiment", "model", "fold", "seed", "modalities", "stores", "config", "provenance"} <= set(run)
    assert run["modalities"] == ["visual", "audio"] and not (tmp_path / "resume.pt").exists()


@pytest.mark.slow
def test_same_seed_same_result_other_seed_other_result(corpus, tmp_path):
    exp = experiment("rjca", model_options={"lstm_layers": 1, "head_hidden": 8}, epochs=2, **SMALL)
    a, b, _ = (train(corpus, tmp_path / name, exp, seed=s) for name, s in (("a", 0), ("b", 0), ("c", 1)))
    sa, sb, sc = (torch.load(tmp_path / n / "model.pt", weights_only=True)["state_dict"] for n in "abc")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a["best_val_ccc_mean"] == b["best_val_ccc_mean"]


def test_lazy_reads_by_a_worker_train_the_same_weights_as_in_memory(corpus, tmp_path):
    exp = experiment("late_fusion", model_options={"lstm_layers": 1, "head_hidden": 8}, epochs=1, **SMALL)
    train(corpus, tmp_path / "mem", exp, in_memory=True)
    train(corpus, tmp_path / "lazy", exp, in_memory=False, workers=1)
    a = torch.load(tmp_path / "mem" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "lazy" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _log_without_time(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def test_an_interrupted_run_resumes_to_the_same_result(corpus, tmp_path):
    exp = experiment(
        "dca",
        model_options={"lstm_layers": 1, "head_hidden": 8},
        epochs=4,
        scheduler="plateau",
        plateau_patience=0,
        warmup_epochs=1,
        **SMALL,
    )
    train(corpus, tmp_path / "whole", exp)
    assert train(corpus, tmp_path / "cut", exp, stop_after=2) == {}
    assert (tmp_path / "cut" / "resume.pt").is_file() and not (tmp_path / "cut" / "model.pt").exists()
    train(corpus, tmp_path / "cut", exp)
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert _log_without_time(tmp_path / "whole" / "log.jsonl") == _log_without_time(tmp_path / "cut" / "log.jsonl")


def test_a_resume_state_saves_and_loads_itself_with_the_optimisation(tmp_path):
    """ResumeState: what resume.pt holds (the keys of before), restored into a fresh model and optimiser with the
    RNG state; another run's fingerprint, or no file, gives a fresh state that starts at epoch 0."""
    from emofusion.training.loop import Optimisation
    from emofusion.training.resume import ResumeState

    exp = experiment("early_fusion", epochs=3, scheduler="plateau", **SMALL)
    path = tmp_path / "resume.pt"

    def fresh():
        torch.manual_seed(0)
        model = build_fusion_model(exp, {"visual": 4, "audio": 4}, 8)
        return model, Optimisation.build(model, exp["training"], CPU)

    model, optimisation = fresh()
    state = ResumeState(path=path, fingerprint="run a")
    assert state.start == 0 and state.best_state is None
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    optimisation.opt.param_groups[0]["lr"] = 0.123
    assert state.record(0, 0.4, model) and not state.record(1, 0.3, model)
    state.log = [{"epoch": 0}, {"epoch": 1}]
    state.save(model=model, optimisation=optimisation, device=CPU)
    rng = torch.get_rng_state()
    assert list(torch.load(path, weights_only=True)) == [
        "fingerprint", "epoch", "model", "optimizer", "scheduler", "scaler", "rng_cpu",
        "best", "best_epoch", "since_best", "best_state", "log",
    ]  # fmt: skip

    torch.rand(3)  # the RNG moves on; loading puts it back
    other, other_opt = fresh()
    loaded = ResumeState.load(path, "run a", model=other, optimisation=other_opt, device=CPU)
    assert (loaded.start, loaded.best, loaded.best_epoch, loaded.since_best) == (2, 0.4, 0, 1)
    assert loaded.log == state.log and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True))
    assert other_opt.lr == 0.123
    assert all(torch.equal(state.best_state[k], loaded.best_state[k]) for k in state.best_state)
    again, again_opt = fresh()
    assert ResumeState.load(path, "run b", model=again, optimisation=again_opt, device=CPU).start == 0
    assert ResumeState.load(tmp_path / "none.pt", "run a", model=again, optimisation=again_opt, device=CPU).start == 0


def test_a_resume_state_of_another_configuration_is_not_used(corpus, tmp_path):
    exp = experiment("early_fusion", epochs=3, **SMALL)
    train(corpus, tmp_path, exp, stop_after=1)
    other = experiment("early_fusion", epochs=2, lr=0.01, **SMALL)
    train(corpus, tmp_path, other)
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2  # started over: 2 epochs, not 1 + 2


def test_a_resume_state_made_on_other_labels_is_not_used(corpus, tmp_path):
    """Snakemake reruns training when labels.h5 is rebuilt, and resume.pt survives that: it must not be resumed."""
    exp = experiment("early_fusion", epochs=3, **SMALL)
    train(corpus, tmp_path / "run", exp, stop_after=1)
    labels = tmp_path / "labels.h5"
    shutil.copy(corpus["labels"], labels)
    with h5py.File(labels, "r+") as h5:
        clip = sorted(h5)[0]
        h5[clip]["values"][0] = -h5[clip]["values"][0] + 0.5  # one relabelled frame
    train_run(
        exp,
        fold=0,
        seed=0,
        out=tmp_path / "run",
        manifest=pd.read_parquet(corpus["manifest"]),
        labels=labels,
        stores={m: corpus["stores"][m] for m in exp["stores"]},
        device=CPU,
    )
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 3  # started over, not resumed at 1


@pytest.mark.slow
def test_a_killed_training_process_resumes_to_the_same_result(corpus, tmp_path):
    """SIGKILL `emofusion train` after an epoch's checkpoint, rerun it: same weights and log as a run never killed."""
    exp_cfg = {
        "model": "rjca",
        "stores": {"visual": "synthv", "audio": "syntha"},
        "preset": "demo",
        "model_options": {"lstm_layers": 1, "head_hidden": 8},
        "training": {**SMALL, "epochs": 6},
    }
    cfg = json.dumps({"fusion": {"experiments": {"r": exp_cfg}, "device": "cpu"}})

    def command(out: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "emofusion.cli",
            "train",
            "--config-json",
            cfg,
            "--experiment",
            "r",
            "--manifest",
            str(corpus["manifest"]),
            "--labels",
            str(corpus["labels"]),
            "--store",
            f"visual={corpus['stores']['visual']}",
            "--store",
            f"audio={corpus['stores']['audio']}",
            "--threads",
            "1",
            "--out",
            str(out),
        ]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True, env=env, timeout=300)
    assert whole.returncode == 0, whole.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen(command(cut), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            log = cut / "log.jsonl"
            if (cut / "resume.pt").is_file() and log.is_file() and len(log.read_text().splitlines()) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "training finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (cut / "model.pt").exists() and (cut / "resume.pt").is_file()
    again = subprocess.run(command(cut), capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch" in again.stderr
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(cut / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _log_without_time(tmp_path / "whole" / "log.jsonl") == _log_without_time(cut / "log.jsonl")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_with_amp_learns_and_evaluates(corpus, tmp_path):
    """The CUDA path: float16 autocast with a gradient scaler, lazy reads by two workers, evaluation on the GPU."""
    from emofusion.evaluation.stage import evaluate_run

    cuda = torch.device("cuda")
    exp = experiment("rjca", model_options={"lstm_layers": 1, "head_hidden": 16}, epochs=6, amp=True, **SMALL)
    stores = {m: corpus["stores"][m] for m in exp["stores"]}
    manifest = pd.read_parquet(corpus["manifest"])
    info = train_run(
        exp,
        fold=0,
        seed=0,
        out=tmp_path,
        manifest=manifest,
        labels=corpus["labels"],
        stores=stores,
        device=cuda,
        in_memory=False,
        workers=2,
    )
    assert info["best_val_ccc_mean"] > 0.5
    metrics = evaluate_run(
        tmp_path,
        tmp_path,
        manifest=manifest,
        labels=corpus["labels"],
        stores=stores,
        smoothing={"windows": [1, 5]},
        device=cuda,
    )
    assert metrics["splits"]["validation"]["raw"]["mean"] == pytest.approx(info["best_val_ccc_mean"], abs=1e-3)
