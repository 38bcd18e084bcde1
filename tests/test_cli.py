"""The command line: every subcommand (discovered from emofusion/commands/) documents itself, and a bad input exits
1 with one line naming the problem, no traceback and nothing written."""

import importlib
import logging
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from emofusion import commands
from emofusion.cli import build_parser, main


def discovered_subcommands() -> list[str]:
    """The NAME of every module in emofusion/commands/ that defines a subcommand (shared helper modules define no
    NAME and run, and are no subcommand)."""
    names = []
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            names.append(module.NAME)
    return sorted(names)


SUBCOMMANDS = discovered_subcommands()

# One bad input per subcommand: its arguments ({tmp}: the test's empty folder) and what the error line must say.
# A new subcommand fails test_bad_input_fails_cleanly until it has an entry here.
BAD_INPUT = {
    "manifest": (
        ["--config-json", '{{"corpus": {{"root": "{tmp}/nope"}}}}', "--out", "{tmp}/out/manifest.parquet"],
        "corpus.root: folder {tmp}/nope does not exist",
    ),
    "labels": (
        ["--manifest", "{tmp}/missing.parquet", "--out", "{tmp}/out/labels.h5"],
        "manifest {tmp}/missing.parquet does not exist",
    ),
    "faces": (["--video", "{tmp}/missing.mp4", "--out", "{tmp}/out/clip.h5"], "video {tmp}/missing.mp4 does not exist"),
    "audio": (["--video", "{tmp}/missing.mp4", "--out", "{tmp}/out/a.wav"], "video {tmp}/missing.mp4 does not exist"),
    "convert-whisper": (
        ["--model", "{tmp}/no-model", "--out", "{tmp}/out/whisper.pt"],
        "'{tmp}/no-model' is not a CTranslate2 Whisper model",
    ),
    "transcribe": (
        ["--audio", "{tmp}/missing.wav", "--out", "{tmp}/out/t.parquet"],
        "audio {tmp}/missing.wav does not exist",
    ),
    "embed": (
        ["--modality", "visual", "--backbone", "fer", "--faces", "{tmp}/missing.h5", "--out", "{tmp}/out/e.h5"],
        "face store {tmp}/missing.h5 does not exist",
    ),
    "embed-merge": (
        ["--modality", "visual", "--backbone", "fer", "--shards", "{tmp}/missing.h5", "--out", "{tmp}/out/fer.h5"],
        "feature store {tmp}/missing.h5 does not exist",
    ),
    "train": (
        ["--experiment", "nope", "--manifest", "{tmp}/m.parquet", "--labels", "{tmp}/l.h5", "--out", "{tmp}/out/run"],
        "fusion.experiments is empty, so there is no experiment 'nope'",
    ),
    "evaluate": (
        ["--run", "{tmp}/run", "--manifest", "{tmp}/m.parquet", "--labels", "{tmp}/l.h5"],
        "{tmp}/run does not exist; pass a trained run folder",
    ),
    "report": (
        ["--manifest", "{tmp}/missing.parquet", "--runs", "{tmp}/run", "--out", "{tmp}/out/report"],
        "{tmp}/run does not exist; pass a trained run folder",  # the runs are checked before anything is read
    ),
    "check-submission": (
        ["--manifest", "{tmp}/missing.parquet", "{tmp}/submission.csv"],
        "manifest {tmp}/missing.parquet does not exist",
    ),
    "predict": (
        ["{tmp}/video.mp4", "--run", "{tmp}/run", "--out", "{tmp}/out/predicted"],
        "--run {tmp}/run is not a folder",
    ),
    "export": (["--run", "{tmp}/run", "--out", "{tmp}/out/model.tar"], "{tmp}/run does not exist; pass a trained run"),
    "status": (["--directory", "{tmp}/project", "--no-dry-run"], "--directory {tmp}/project is not a folder"),
}


def _subparsers() -> dict:
    return next(a for a in build_parser()._actions if a.dest == "command").choices


def test_subcommands_are_discovered_and_registered():
    assert sorted(_subparsers()) == SUBCOMMANDS
    assert {"manifest", "labels", "faces", "audio", "transcribe", "embed", "train", "evaluate", "report"} <= set(
        SUBCOMMANDS
    )


def test_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "emofusion.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in SUBCOMMANDS:  # a long name stands alone on its line, its help on the next
        assert re.search(rf"^    {re.escape(name)}( |$)", out, re.MULTILINE), name


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: emofusion {name} "), out[:200]
    description = _subparsers()[name].description
    assert description and len(description) > 40, name
    assert description.splitlines()[0] in out
    assert "--out" in out or name.startswith("convert") or name == "status", name  # status only reads


def test_every_bad_input_case_is_a_subcommand():
    assert sorted(BAD_INPUT) == SUBCOMMANDS, "BAD_INPUT and the subcommands in emofusion/commands/ differ"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_bad_input_fails_cleanly(name, tmp_path, caplog):
    """In-process (the real process's stderr is checked below): exit status 1, one error record of one line, no
    exception logged with it, nothing written."""
    assert name in BAD_INPUT, f"add a bad-input case for the subcommand {name!r} to BAD_INPUT"
    args, expected = BAD_INPUT[name]
    with caplog.at_level(logging.INFO, logger="emofusion"):
        rc = main([name, *(a.format(tmp=tmp_path) for a in args)])
    assert rc == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert expected.format(tmp=tmp_path) in message and "\n" not in message and errors[0].exc_info is None
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no output, no temporary file


def test_bad_input_in_a_real_process_is_one_line_on_stderr(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "emofusion.cli",
            "labels",
            "--manifest",
            str(tmp_path / "m.parquet"),
            "--out",
            str(tmp_path / "labels.h5"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and f"manifest {tmp_path / 'm.parquet'} does not exist" in lines[0], proc.stderr


def test_missing_required_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["faces", "--out", "x.h5"])
    assert exit_.value.code == 2
    assert "the following arguments are required: --video" in capsys.readouterr().err


def test_invalid_config_key_fails(tmp_path, caplog):
    rc = main(["manifest", "--config-json", '{"folds": {"k": "x"}}', "--out", str(tmp_path / "m.parquet")])
    assert rc == 1 and "folds.k" in caplog.text


def _unreadable_cases(tmp):
    """(arguments, what the one error line must say) for inputs that used to end in a traceback."""
    (tmp / "notes.parquet").write_text("clip,video\nnot,parquet\n\t[\n")  # neither Parquet nor HDF5 nor YAML
    (tmp / "folder").mkdir()
    (tmp / "a-file").write_text("a file where predict's --out folder should go\n")
    (tmp / "video.mp4").write_bytes(b"")
    return {
        "labels, a CSV as --manifest": (
            ["labels", "--manifest", f"{tmp}/notes.parquet", "--out", f"{tmp}/labels.h5"],
            f"manifest {tmp}/notes.parquet is not a readable Parquet table",
        ),
        "train, a CSV as --manifest": (
            [
                *("train", "--config", str(REPO / "config.yaml"), "--experiment", "rjcma"),
                *("--manifest", f"{tmp}/notes.parquet", "--labels", f"{tmp}/l.h5", "--out", f"{tmp}/run"),
            ],
            f"manifest {tmp}/notes.parquet is not a readable Parquet table",
        ),
        "convert-whisper, a folder as --out": (
            ["convert-whisper", "--out", f"{tmp}/folder"],
            f"--out {tmp}/folder is a folder; convert-whisper writes one checkpoint file: pass its path, e.g. "
            f"--out {tmp}/folder/whisper-tiny.en.pt",
        ),
        "embed, a text file as --faces": (
            [
                "embed",
                "--modality",
                "visual",
                "--backbone",
                "fer",
                "--faces",
                f"{tmp}/notes.parquet",
                "--out",
                f"{tmp}/e.h5",
            ],
            f"face store {tmp}/notes.parquet is not a readable HDF5 file",
        ),
        "manifest, a config that is not YAML": (
            ["manifest", "--config", f"{tmp}/notes.parquet", "--out", f"{tmp}/m.parquet"],
            f"config file {tmp}/notes.parquet is not valid YAML: ",
        ),
        "predict, --out below a file": (
            ["predict", f"{tmp}/video.mp4", "--run", f"{tmp}/folder", "--out", f"{tmp}/a-file/predicted"],
            f"cannot write --out {tmp}/a-file/predicted: Not a directory",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "labels, a CSV as --manifest",
        "train, a CSV as --manifest",
        "convert-whisper, a folder as --out",
        "embed, a text file as --faces",
        "manifest, a config that is not YAML",
        "predict, --out below a file",
    ],
)
def test_an_unreadable_input_is_one_line_in_a_real_process(case, tmp_path):
    args, expected = _unreadable_cases(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "emofusion.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, no temporary left


def test_predict_refuses_an_unwritable_out_before_any_work(tmp_path, caplog, monkeypatch):
    """A read-only --out (as a user without write access, or a read-only mount, sees it: tests run as root, so the
    error is made where it happens) is refused before the model is loaded or any video decoded."""
    import tempfile

    import emofusion.predict.stage as stage

    def no_work(*a, **k):
        raise AssertionError("predict started working on an --out it cannot write")

    def refuse(*a, dir=None, **k):
        raise PermissionError(13, "Permission denied", str(Path(dir) / ".x"))

    monkeypatch.setattr(stage, "predict_videos", no_work)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    rc = main(["predict", str(tmp_path / "v.mp4"), "--run", str(tmp_path), "--out", str(tmp_path / "locked")])
    assert rc == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"cannot write --out {tmp_path / 'locked'}: Permission denied" in errors[0], errors
    assert "choose a folder you can write to" in errors[0]


def test_an_os_error_no_check_named_is_one_line(tmp_path, caplog, monkeypatch):
    """The last net: an OSError from any command (here a conversion writing into a folder that vanished) is one line
    naming the file, not a traceback."""
    import emofusion.asr.stage as stage

    def convert(model, out):
        (tmp_path / "gone" / "whisper.pt").write_bytes(b"")

    monkeypatch.setattr(stage, "convert_model", convert)
    assert main(["convert-whisper", "--out", str(tmp_path / "w.pt")]) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert errors[0].getMessage().startswith(f"{tmp_path / 'gone' / 'whisper.pt'}: No such file or directory; ")


@pytest.mark.parametrize("argv", [["-v", "status"], ["status", "-v"]])
def test_verbose_before_or_after_the_subcommand(argv):
    """`emofusion -v COMMAND` is verbose too (the subcommand's own -v default used to reset it)."""
    assert build_parser().parse_args(argv).verbose is True
    assert build_parser().parse_args(["status"]).verbose is False
