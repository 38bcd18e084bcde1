"""The command line: help lists every step; failures exit non-zero, name the problem, leave nothing behind."""

import subprocess
import sys

from emofusion.cli import build_parser, main

STEPS = ["manifest", "labels"]


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "emofusion.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for step in STEPS:
        assert f"    {step} " in out


def test_every_subcommand_documents_itself():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.description and len(p.description) > 40, name
        assert "--out" in p.format_help() or name.startswith("convert") or name == "status", name  # status: reads only


def test_bad_corpus_fails_cleanly(tmp_path, caplog):
    out = tmp_path / "results" / "manifest.parquet"
    rc = main(["manifest", "--config-json", f'{{"corpus": {{"root": "{tmp_path / "nope"}"}}}}', "--out", str(out)])
    assert rc == 1
    assert "corpus.root" in caplog.text
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no output, no temporary file


def test_invalid_config_key_fails(tmp_path, caplog):
    rc = main(["manifest", "--config-json", '{"folds": {"k": "x"}}', "--out", str(tmp_path / "m.parquet")])
    assert rc == 1 and "folds.k" in caplog.text
