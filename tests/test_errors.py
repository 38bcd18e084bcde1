"""Each probe of a new user's mistakes ends in one line naming the file (or config key) and a fix that works,
never a traceback: an unwritable report folder, a feature store passed as --labels, a corrupt resume.pt, `train`
without --config, an experiment naming an unknown store, and the retrain / rebuild advice."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_status
from emofusion.cli import main
from emofusion.errors import ConfigError, InputError
from emofusion.fusion_data.windows import Windowing
from emofusion.training.experiments import grid
from emofusion.training.stage import train_run
from fusion_corpus import experiment, fold_data, make_corpus
from fusion_runs import make_manifest, make_runs

SMALL = {"window": 32, "steps": 8, "pool": 2, "train_hop": 8}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    torch.set_num_threads(1)
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def error_line(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    return errors[0]


def test_report_into_a_folder_it_cannot_write(tmp_path, caplog, monkeypatch):
    manifest = make_manifest(tmp_path / "manifest.parquet")
    runs = make_runs(tmp_path / "fusion", manifest, folds=(0,), seeds=(0,))
    args = ["report", "--manifest", str(tmp_path / "manifest.parquet"), "--runs", *map(str, runs)]
    # A file where the folder should be (the tests run as root, for whom permissions are no obstacle) ...
    (tmp_path / "taken").write_text("a file, not a folder")
    assert main([*args, "--out", str(tmp_path / "taken" / "report")]) == 1
    assert "cannot write" in error_line(caplog) and "taken" in error_line(caplog)
    # ... and the PermissionError a user without write access gets from the temporary file.
    caplog.clear()

    def refuse(*a, dir=None, **k):
        raise PermissionError(13, "Permission denied", str(Path(dir) / ".results.csv.tmp-x"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    assert main([*args, "--out", str(tmp_path / "locked")]) == 1
    line = error_line(caplog)
    assert "cannot write" in line and "Permission denied" in line and "locked" in line
    assert "choose an output folder you can write to" in line


def test_a_feature_store_passed_as_labels(corpus):
    with pytest.raises(InputError, match=r"synthv\.h5 is a visual feature store, not a labels store; pass --labels"):
        fold_data(
            pd.read_parquet(corpus["manifest"]),
            labels=corpus["stores"]["visual"],
            stores={"audio": corpus["stores"]["audio"]},
            backbones={"audio": "syntha"},
            fold=0,
            windowing=Windowing.from_training(SMALL, key="k"),
        )


def test_a_text_file_passed_as_labels(corpus, tmp_path):
    (tmp_path / "labels.h5").write_text("not hdf5")
    with pytest.raises(InputError, match=r"labels\.h5 is not an HDF5 file"):
        fold_data(
            pd.read_parquet(corpus["manifest"]),
            labels=tmp_path / "labels.h5",
            stores={"audio": corpus["stores"]["audio"]},
            backbones={"audio": "syntha"},
            fold=0,
            windowing=Windowing.from_training(SMALL, key="k"),
        )


def test_a_corrupt_resume_state_is_set_aside_and_training_starts_over(corpus, tmp_path, caplog):
    exp = experiment("early_fusion", epochs=1, **SMALL)
    (tmp_path / "resume.pt").write_bytes(b"PK\x03\x04 half of a zip file")
    stores = {m: corpus["stores"][m] for m in exp["stores"]}
    train_run(
        exp,
        fold=0,
        seed=0,
        out=tmp_path,
        manifest=pd.read_parquet(corpus["manifest"]),
        labels=corpus["labels"],
        stores=stores,
        device=torch.device("cpu"),
    )
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "resume.pt.corrupt").is_file()
    assert not (tmp_path / "resume.pt").exists()
    assert any(
        "resume.pt cannot be read" in r.getMessage() and "set aside as" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


def test_train_without_config_says_to_pass_it(corpus, tmp_path, caplog):
    code = main(
        [
            "train",
            "--experiment",
            "rjcma",
            "--manifest",
            str(corpus["manifest"]),
            "--labels",
            str(corpus["labels"]),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 1
    assert "pass the config that defines it, e.g. `--config config.yaml`" in error_line(caplog)


def test_an_unknown_store_names_the_experiment_key():
    fusion = {"experiments": {"late": {"model": "late_fusion", "stores": {"visual": "ferr", "audio": "egemaps"}}}}
    with pytest.raises(
        ConfigError,
        match=r"^fusion\.experiments\.late\.stores\.visual: unknown store 'ferr'; "
        r"registered visual backbones: .*\bfer\b",
    ):
        grid(fusion)


def test_evaluate_advice_is_a_full_command(corpus, tmp_path, caplog, monkeypatch):
    run = tmp_path / "results/fusion/late/fold0/seed1"
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    code = main(
        ["evaluate", "--run", str(run), "--manifest", str(corpus["manifest"]), "--labels", str(corpus["labels"])]
    )
    assert code == 1
    assert "`snakemake --cores 2 --forcerun results/fusion/late/fold0/seed1/model.pt`" in error_line(caplog)


def test_a_store_edited_in_place_gets_a_command_that_reruns_it(corpus, tmp_path, monkeypatch):
    store = tmp_path / "results/features/visual/synthv.h5"
    store.parent.mkdir(parents=True)
    store.write_bytes(Path(corpus["stores"]["visual"]).read_bytes())
    with h5py.File(store, "r+") as f:
        f["clip08"]["features"][17, 0] = np.nan
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as err:
        fold_data(
            pd.read_parquet(corpus["manifest"]),
            labels=corpus["labels"],
            stores={"visual": store},
            backbones={"visual": "synthv"},
            fold=0,
            windowing=Windowing.from_training(SMALL, key="k"),
        )
    # --forcerun: the edited store is newer than its shards, so a plain `snakemake features` does nothing
    assert "(`snakemake --cores 2 --forcerun results/features/visual/synthv.h5`)" in str(err.value)


def test_repair_commands_outside_the_workflow_layout_name_every_required_argument(tmp_path):
    """A run folder of the workflow gets a Snakemake command; any other folder the full emofusion command (with
    placeholders for what only the user knows), never one missing a required option."""
    from emofusion.repair import reevaluate, retrain

    assert reevaluate("results/fusion/rjca/fold0/seed0") == (
        "snakemake --cores 2 --forcerun results/fusion/rjca/fold0/seed0/metrics.json"
    )
    for command, required in (
        (retrain(tmp_path / "run"), ("--experiment", "--fold", "--seed", "--out")),
        (reevaluate(tmp_path / "run"), ("--run", "--manifest", "--labels")),
    ):
        assert all(option in command for option in (*required, "--config")), command
        assert str(tmp_path / "run") in command


def _corpus_with_a_bad_clip_id(root: Path) -> Path:
    """A demo clip whose file names give the clip id 'bad clip' (a space: not allowed)."""
    from conftest import DEMO

    (root / "videos/batch1").mkdir(parents=True)
    (root / "annotations/VA_Estimation_Challenge/Train_Set").mkdir(parents=True)
    (root / "videos/batch1/bad clip.mp4").symlink_to(next(DEMO.glob("videos/*/demo07-30-320x180.mp4")))
    (root / "annotations/VA_Estimation_Challenge/Train_Set/bad clip.txt").symlink_to(
        next(DEMO.glob("annotations/*/*/demo07-30-320x180.txt"))
    )
    return root


def test_a_bad_clip_id_is_its_message_not_stack_frames(workdir):
    """Snakemake's report of an error in common.smk ends in stack frames: `snakemake -n` and `emofusion status`
    (which showed the last lines of it) print the message naming the file instead."""
    from conftest import REPO, snakemake

    root = _corpus_with_a_bad_clip_id(workdir / "aw")
    config = ["--config", f"corpus={{root: {root}}}"]
    proc = snakemake("-n", "--snakefile", str(REPO / "Snakefile"), *config, cwd=workdir)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 1 and 'File "' not in console, console
    assert "bad clip.txt: clip id 'bad clip' is not allowed; use letters, digits" in console
    code, out = run_status(workdir, *config)
    assert code == 1 and 'File "' not in out, out
    tail = out.split("The Snakemake dry run failed (its message follows); fix that first:\n", 1)[1]
    assert "clip id 'bad clip' is not allowed" in tail, out


def test_status_turns_a_dotted_snakemake_config_key_into_a_hint_that_works(workdir):
    """Snakemake itself refuses `--config corpus.root=...` (with its own traceback); status says how to set a nested
    key, and the spelling it prints works."""
    import re
    import shlex

    from conftest import DEMO

    code, out = run_status(workdir, "--config", f"corpus.root={DEMO}")
    assert code == 1 and "Traceback" not in out and 'File "' not in out, out
    hint = re.search(r"set a nested one as (--config '.*?')", out)
    assert hint, out
    code, out = run_status(workdir, *shlex.split(hint.group(1).replace("VALUE", str(DEMO))))
    assert "dry run failed" not in out and "The Snakemake dry run plans" in out, out


def test_a_resume_state_of_text_is_set_aside_not_a_traceback(tmp_path):
    """torch's weights-only unpickler raises IndexError on bytes that are no pickle at all."""
    from emofusion.training.resume import read_resume

    path = tmp_path / "resume.pt"
    path.write_bytes(b"an interrupted training's state, unreadable")
    assert read_resume(path) is None
    assert (tmp_path / "resume.pt.corrupt").is_file() and not path.exists()
