"""Advice that works as printed: a file passed where another kind belongs, or a folder that is not a run, gets told
what to pass instead, never a command that would rebuild the wrong file or train into the wrong folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from emofusion.cli import main
from fusion_corpus import make_corpus
from fusion_runs import make_manifest, make_runs


def error(caplog, argv: list[str]) -> str:
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="emofusion"):
        assert main(argv) == 1
    return caplog.records[-1].getMessage()


def test_embed_merge_of_the_labels_store_says_it_is_no_feature_store(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    make_corpus(Path("results"), modalities=("audio",))
    message = error(
        caplog,
        [
            "embed-merge",
            "--modality",
            "audio",
            "--backbone",
            "egemaps",
            "--shards",
            "results/labels.h5",
            "--out",
            "x.h5",
        ],
    )
    assert message.startswith("results/labels.h5 is not a feature store (the labels store"), message
    assert "--forcerun" not in message and "emofusion embed" in message
    assert not Path("x.h5").exists()


def test_a_store_outside_the_workflow_layout_gets_the_emofusion_command(tmp_path):
    from emofusion.repair import rebuild_store

    assert rebuild_store("results/features/audio/egemaps.h5") == (
        "snakemake --cores 2 --forcerun results/features/audio/egemaps.h5"
    )
    assert rebuild_store("results/features/visual/fer/demo01.h5").endswith(
        "--forcerun results/features/visual/fer/demo01.h5"
    )
    other = rebuild_store(tmp_path / "mine.h5")
    assert other.startswith("emofusion embed --modality MODALITY --backbone NAME --out ") and "snakemake" not in other


@pytest.mark.parametrize("command", ["evaluate", "report", "export"])
def test_a_folder_that_is_not_a_run_is_refused_naming_the_runs_under_it(command, tmp_path, monkeypatch, caplog):
    """`results/fusion` (the folder of every run) passed as a run: told which runs lie under it, not told to train
    into it (`emofusion train ... --out results/fusion`)."""
    monkeypatch.chdir(tmp_path)
    manifest = make_manifest(Path("results/manifest.parquet"))
    make_runs(Path("results/fusion"), manifest, folds=(0,), seeds=(0,))
    argv = {
        "evaluate": ["evaluate", "--run", "results/fusion", "--manifest", "m", "--labels", "l"],
        "report": ["report", "--manifest", "results/manifest.parquet", "--runs", "results/fusion", "--out", "r"],
        "export": ["export", "--run", "results/fusion", "--out", "b.tar"],
    }[command]
    message = error(caplog, argv)
    assert message.startswith("results/fusion is not a run folder (it has no run.json or model.pt); pass a trained run")
    assert "e.g. results/fusion/" in message and "emofusion train" not in message, message
    assert not any(Path(p).exists() for p in ("r", "b.tar"))
