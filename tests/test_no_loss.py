"""Nothing a user made is ever lost (issue 22): `export`, `report` and `predict` into a folder holding a user's
file leave it untouched and refuse before any work, in one line, exit status 1; predict keeps every model's
result, replaces a file only with --overwrite, and two predicts share one cache."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import venv_env
from emofusion.cli import main
from emofusion.errors import InputError
from fusion_runs import make_manifest, make_run
from test_predict import SYNTHETIC, _bundle


def _one_error(caplog) -> str:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None and "\n" not in errors[0].getMessage()
    return errors[0].getMessage()


def _user_files(folder: Path) -> dict[str, str]:
    """A user's files in ``folder`` (a text file and one in a subfolder); returns them by relative path."""
    files = {"thesis.txt": "four years of work", "data/figure1.png": "not a plot emofusion drew"}
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return files


def _untouched(folder: Path, files: dict[str, str]) -> None:
    assert all((folder / rel).read_text() == text for rel, text in files.items())


# --------------------------------------------------------------------------------------------------------- export


@pytest.fixture
def exportable(tmp_path, monkeypatch):
    """A run folder whose model.pt is a real checkpoint. recipe_from_run needs a whole pipeline's stores (the
    workflow test exports a real run), so load_run gives the model of a synthetic bundle on this checkpoint and
    records that it was called: a refusal must come before it (before any work)."""
    import emofusion.predict.bundle as bundle
    from emofusion.provenance import file_sha256

    source = _bundle(tmp_path / "synthetic")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(source / "model.pt", run / "model.pt")
    calls: list[Path] = []

    def load_run(path):
        calls.append(Path(path))
        model = bundle.load_bundle(source)
        model.source = {"kind": "run", "path": str(path), "checkpoint_sha256": file_sha256(Path(path) / "model.pt")}
        return model

    monkeypatch.setattr(bundle, "load_run", load_run)
    return run, calls


def test_export_into_a_folder_gives_a_bundle_and_replaces_only_its_own(tmp_path, exportable):
    run, _ = exportable
    from emofusion.predict.bundle import load_bundle
    from emofusion.provenance import file_sha256

    out = tmp_path / "bundle"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json", "model.pt"]
    model = load_bundle(out)
    assert model.source["checkpoint_sha256"] == file_sha256(run / "model.pt") and model.name == SYNTHETIC
    assert json.loads((out / "bundle.json").read_text())["exported_from"] == str(run)
    # again over its own bundle (and an empty folder): replaced
    (out / "model.pt").write_bytes(b"an older export")
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    assert (out / "model.pt").read_bytes() == (run / "model.pt").read_bytes()
    (tmp_path / "empty").mkdir()
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "empty")]) == 0
    # a tar over its own earlier tar
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "m.tar")]) == 0
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "m.tar")]) == 0
    with tarfile.open(tmp_path / "m.tar") as tar:
        assert sorted(tar.getnames()) == ["bundle.json", "model.pt"]


def test_export_refuses_a_folder_holding_a_users_files_before_any_work(tmp_path, exportable, caplog):
    run, calls = exportable
    precious = tmp_path / "precious"
    files = _user_files(precious)
    (precious / "model.pt").write_text("my own model.pt, beside my files")
    with caplog.at_level(logging.INFO, logger="emofusion"):
        assert main(["export", "--run", str(run), "--out", str(precious)]) == 1
    message = _one_error(caplog)
    assert f"--out {precious} holds files emofusion did not write there (data, thesis.txt)" in message
    assert "choose another --out" in message
    assert calls == []  # refused before the run was read
    _untouched(precious, files)
    assert (precious / "model.pt").read_text() == "my own model.pt, beside my files"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious", "run", "synthetic"]  # no temporary


def test_export_out_dot_never_empties_the_working_folder(tmp_path, exportable, caplog, monkeypatch):
    run, calls = exportable
    work = tmp_path / "work"
    work.mkdir()
    files = _user_files(work)
    monkeypatch.chdir(work)
    with caplog.at_level(logging.INFO, logger="emofusion"):
        assert main(["export", "--run", str(run), "--out", "."]) == 1
    assert "--out . is the current folder or holds it" in _one_error(caplog)
    _untouched(work, files)
    assert calls == []
    # the advised folder works as printed
    assert main(["export", "--run", str(run), "--out", "./out"]) == 0
    assert (work / "out" / "bundle.json").is_file()
    _untouched(work, files)


@pytest.mark.parametrize("case", ["README.md", "user.tar", "folder.tar"])
def test_export_never_replaces_an_out_of_the_wrong_kind(tmp_path, exportable, caplog, case):
    run, calls = exportable
    out = tmp_path / case
    if case == "folder.tar":
        files = _user_files(out)
    else:
        out.write_text("a user's file")
    with caplog.at_level(logging.INFO, logger="emofusion"):
        assert main(["export", "--run", str(run), "--out", str(out)]) == 1
    message = _one_error(caplog)
    expect = {
        "README.md": "is a file, not a folder",
        "user.tar": "exists and is not a bundle emofusion wrote",
        "folder.tar": "is a folder, not a file",
    }[case]
    assert f"--out {out} {expect}" in message and calls == []
    if case == "folder.tar":
        _untouched(out, files)
    else:
        assert out.read_text() == "a user's file"


def test_export_refuses_a_checkpoint_retrained_while_it_exports(tmp_path, exportable, monkeypatch):
    """The checkpoint hash guard: model.pt read by load_run and the bytes written to the bundle must be the same
    file; a retrain in between is an error and writes nothing."""
    run, _ = exportable
    import emofusion.predict.bundle as bundle

    loaded = bundle.load_run

    def load_then_retrain(path):
        model = loaded(path)
        (Path(path) / "model.pt").write_bytes((Path(path) / "model.pt").read_bytes() + b"retrained")
        return model

    monkeypatch.setattr(bundle, "load_run", load_then_retrain)
    for out in (tmp_path / "folder", tmp_path / "b.tar"):
        with pytest.raises(InputError, match=rf"{run}/model.pt changed while it was exported; export again"):
            bundle.export_bundle(run, out)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "synthetic"]


# --------------------------------------------------------------------------------------------------------- report


def _report(tmp: Path, runs, out: Path) -> int:
    config = json.dumps({"report": {"plot_clips": 0}})
    args = ["report", "--config-json", config, "--manifest", str(tmp / "manifest.parquet")]
    return main([*args, "--runs", *map(str, runs), "--out", str(out)])


@pytest.mark.slow  # two reports (plots)
def test_report_keeps_a_users_figure_in_plots_and_replaces_its_own_report(tmp_path, caplog):
    manifest = make_manifest(tmp_path / "manifest.parquet")
    runs = [make_run(tmp_path / "fusion", manifest, experiment="e", fold=0, seed=0, quality=0.5)]
    out = tmp_path / "report"
    assert _report(tmp_path, runs, out) == 0
    for folder in ("plots", "submission"):  # what the report rule's directory() outputs get from Snakemake
        (out / folder / ".snakemake_timestamp").touch()
    assert _report(tmp_path, runs, out) == 0  # over its own report: replaced
    (out / "plots" / "figure1.png").write_text("the user's figure")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="emofusion"):
        assert _report(tmp_path, [tmp_path / "no-such-run"], out) == 1  # the folder is refused before runs are read
    message = _one_error(caplog)
    assert message.startswith(f"{out / 'plots'} holds files emofusion did not write there (figure1.png)")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("where", ["top", "plots", "submission", "file"])
def test_report_refuses_an_out_with_a_users_files_before_reading_a_run(tmp_path, caplog, where):
    out = tmp_path / "report"
    if where == "file":
        out.write_text("a user's file")
        files = {}
    else:
        (out / "submission").mkdir(parents=True)
        (out / "submission" / "check.json").write_text(json.dumps({"files": {"e": {"file": "e.csv"}}}))
        (out / "submission" / "e.csv").write_text("an earlier report's")
        files = _user_files(out if where == "top" else out / where)
    with caplog.at_level(logging.INFO, logger="emofusion"):
        assert _report(tmp_path, [tmp_path / "no-such-run"], out) == 1
    message = _one_error(caplog)
    if where == "file":
        assert f"--out {out} is a file, not a folder" in message and out.read_text() == "a user's file"
    else:
        folder = out if where == "top" else out / where
        assert f"{folder} holds files emofusion did not write there (data, thesis.txt)" in message
        _untouched(folder, files)
        assert (out / "submission" / "e.csv").read_text() == "an earlier report's"


# -------------------------------------------------------------------------------------------------------- predict


def _predict(*args: str) -> int:
    return main(["predict", *args])


def _renamed(doc, experiment):
    doc["recipe"]["experiment"] = experiment


def test_two_models_on_one_video_into_one_out_both_kept(tmp_path, make_video):
    video = make_video(frames=30, size="64x48")
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = _bundle(tmp_path / "a", edit=lambda d: _renamed(d, "first"))
    second = _bundle(tmp_path / "b", edit=lambda d: _renamed(d, "second"))
    (out).mkdir()
    (out / f"{video.stem}.csv").write_text("the user's own table")  # the demo03.csv: never touched
    for bundle in (first, second):
        assert _predict(str(video), "--model", str(bundle), "--out", str(out), "--cache", str(cache)) == 0
    names = {f"{video.stem}.{m}-fold0-seed0.{e}" for m in ("first", "second") for e in ("csv", "json", "png")}
    assert {p.name for p in out.iterdir()} == {*names, f"{video.stem}.csv"}
    assert (out / f"{video.stem}.csv").read_text() == "the user's own table"
    for m in ("first", "second"):
        summary = json.loads((out / f"{video.stem}.{m}-fold0-seed0.json").read_text())
        assert summary["model"]["experiment"] == m
    assert _predict(str(video), "--model", str(first), "--out", str(out), "--name", "mine", "--cache", str(cache)) == 0
    assert (out / f"{video.stem}.mine.csv").is_file()


def test_predict_never_replaces_an_existing_file_without_overwrite(tmp_path, make_video, caplog):
    video = make_video(frames=30, size="64x48")
    bundle = _bundle(tmp_path / "b")
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    target = out / f"{video.stem}.{SYNTHETIC}.csv"
    target.write_text("the user's file of that name")
    args = [str(video), "--model", str(bundle), "--out", str(out), "--cache", str(cache)]
    with caplog.at_level(logging.INFO, logger="emofusion"):
        assert _predict(*args) == 1
    message = _one_error(caplog)
    assert message == (
        f"{target} already exists; nothing was predicted: pass --overwrite to replace it, or choose another --out"
    )
    assert target.read_text() == "the user's file of that name" and not cache.exists()  # refused before any work
    assert sorted(p.name for p in out.iterdir()) == [target.name]
    assert _predict(*args, "--overwrite") == 0  # as the message advises
    assert target.read_text().startswith("frame,time_s,valence")


def test_predict_name_is_one_file_name_part(tmp_path, make_video, caplog):
    video = make_video(frames=30, size="64x48")
    with caplog.at_level(logging.INFO, logger="emofusion"):
        assert _predict(str(video), "--run", str(tmp_path), "--out", str(tmp_path / "o"), "--name", "../x") == 1
    assert "--name '../x': use letters, digits" in _one_error(caplog) and not (tmp_path / "o").exists()


def test_predict_refuses_an_out_that_is_a_file(tmp_path, make_video, caplog):
    video = make_video(frames=30, size="64x48")
    out = tmp_path / "out.txt"
    out.write_text("mine")
    with caplog.at_level(logging.INFO, logger="emofusion"):
        assert _predict(str(video), "--model", str(_bundle(tmp_path / "b")), "--out", str(out)) == 1
    assert f"--out {out} is a file, not a folder" in _one_error(caplog) and out.read_text() == "mine"


@pytest.mark.slow  # two predict processes (each imports torch)
def test_two_predicts_on_one_cache_at_once_both_succeed(tmp_path, make_video):
    """The manual's shared --cache (docs/predict.md) used by two processes at the same time (the same video, the
    same stages: they write the same cache entries at once). Before, one removed the other's temporary as stale
    and it crashed."""
    video = make_video(frames=3600, size="64x48")  # 2 minutes: both decode its audio at once (seconds each)
    bundle = _bundle(tmp_path / "b")
    emofusion = str(Path(sys.executable).with_name("emofusion"))
    common = ["--model", str(bundle), "--cache", str(tmp_path / "cache"), "--threads", "1"]
    procs = [
        subprocess.Popen(
            [emofusion, "predict", str(video), *common, "--out", str(tmp_path / f"out{i}")],
            env=venv_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in (1, 2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for i in (1, 2):
        assert (tmp_path / f"out{i}" / f"{video.stem}.{SYNTHETIC}.json").is_file()
    assert not [p for p in (tmp_path / "cache").rglob("*.tmp-*")]


# ---------------------------------------------------------------------------------------------- a file's --out


@pytest.mark.slow  # converts the shipped Whisper model first
def test_a_file_out_that_is_a_folder_is_refused_in_one_line(tmp_path, caplog):
    """convert-whisper --out <folder>: one line before the conversion, the folder and its files kept (before,
    os.replace failed with a traceback); atomic_path refuses a folder for any file output too."""
    from emofusion.io import atomic_path

    files = _user_files(tmp_path / "models")
    with caplog.at_level(logging.INFO, logger="emofusion"):
        assert main(["convert-whisper", "--out", str(tmp_path / "models")]) == 1
    assert f"--out {tmp_path / 'models'} is a folder; convert-whisper writes one checkpoint file" in _one_error(caplog)
    with pytest.raises(InputError, match="is a folder, not a file; it is left alone"), atomic_path(tmp_path / "models"):
        raise AssertionError("the block ran over a folder")
    _untouched(tmp_path / "models", files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]
