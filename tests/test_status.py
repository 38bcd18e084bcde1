"""`emofusion status`: every missing, incomplete, edited or no-longer-reported piece is found, with a repair
command; (marked workflow) each repair works as printed on a small finished fusion run."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from pathlib import Path

import pytest
import yaml

from conftest import on_demo, snakemake
from emofusion.cli import main
from emofusion.config import load_config
from emofusion.status import status
from fusion_corpus import make_corpus
from fusion_runs import make_manifest, make_runs

EXPERIMENTS = {
    "rjca_demo": {"model": "rjca"},
    "unimodal_audio": {"model": "unimodal_audio", "stores": {"audio": "egemaps"}},
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with two evaluated runs (fold 0, seed 0) and the report over them; cwd is the folder."""
    monkeypatch.chdir(tmp_path)
    manifest = make_manifest(Path("results/manifest.parquet"))
    runs = make_runs(Path("results/fusion"), manifest, folds=(0,), seeds=(0,))
    assert (
        main(["report", "--manifest", "results/manifest.parquet", "--runs", *map(str, runs), "--out", "results/report"])
        == 0
    )
    cfg = load_config(overrides={"fusion": {"experiments": EXPERIMENTS}})
    return cfg, runs


def findings_under(cfg, prefix: str) -> list:
    return [f for f in status(cfg) if f.path.startswith(prefix)]


def test_the_report_records_its_run_files_and_checksums(project):
    from emofusion.provenance import file_sha256

    prov = json.loads(Path("results/report/provenance.json").read_text())
    entry = prov["runs"][0]
    assert set(entry["files"]) == {"model.pt", "log.jsonl", "run.json", "predictions.parquet", "metrics.json"}
    assert entry["files"]["metrics.json"] == file_sha256(Path(entry["path"]) / "metrics.json")


def test_a_finished_project_has_no_run_or_report_findings(project):
    cfg, _ = project
    assert findings_under(cfg, "results/fusion") == [] and findings_under(cfg, "results/report") == []
    # the labels and stores of this synthetic project were never made: found, with the command that makes them
    missing = {f.path: f.repair for f in status(cfg)}
    assert missing["results/labels.h5"] == "snakemake --cores 2 --forcerun results/labels.h5"


def test_missing_run_files_and_what_the_report_describes(project):
    cfg, _ = project
    run = "results/fusion/rjca_demo/fold0/seed0"
    (Path(run) / "model.pt").unlink()
    found = findings_under(cfg, run)
    assert [f.problem for f in found] == [
        "incomplete run folder: no model.pt",
        "the report describes this run but its model.pt is gone",
    ]
    assert {f.repair for f in found} == {f"snakemake --cores 2 --forcerun {run}/model.pt"}

    (Path(run) / "model.pt").write_bytes(b"weights")
    (Path(run) / "metrics.json").unlink()  # only the evaluation is gone: evaluate again, no retraining
    assert findings_under(cfg, run)[0].repair == f"snakemake --cores 2 --forcerun {run}/metrics.json"

    shutil.rmtree("results/fusion/unimodal_audio")
    found = findings_under(cfg, "results/fusion/unimodal_audio")
    assert found[0].problem == "run folder missing"


def test_changed_runs_and_runs_the_config_dropped(project):
    cfg, _ = project
    run = Path("results/fusion/rjca_demo/fold0/seed0")
    (run / "log.jsonl").write_text((run / "log.jsonl").read_text() + "\n")
    found = findings_under(cfg, str(run))
    assert found[0].problem.startswith("changed since the report was built (log.jsonl)")
    assert found[0].repair == "snakemake --cores 2 --forcerun results/report/results.csv"

    fewer = load_config(overrides={"fusion": {"experiments": {"rjca_demo": EXPERIMENTS["rjca_demo"]}}})
    dropped = findings_under(fewer, "results/fusion/unimodal_audio")
    assert [f.problem for f in dropped] == ["the report describes this run, which the config no longer asks for"]

    more = load_config(overrides={"fusion": {"experiments": EXPERIMENTS, "seeds": [0, 1]}})
    assert "run folder missing" in [f.problem for f in findings_under(more, "results/fusion/rjca_demo/fold0/seed1")]


def test_a_file_edited_after_its_job_ended(project):
    """Snakemake's record of when the job ended (.snakemake/metadata) against the file's time."""
    from base64 import urlsafe_b64encode

    cfg, _ = project
    path = "results/labels.h5"
    Path(path).write_bytes(b"labels")
    record = Path(".snakemake/metadata") / urlsafe_b64encode(path.encode()).decode()
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"endtime": time.time() - 60}))
    (found,) = [f for f in status(cfg) if f.path == path]
    assert "after the Snakemake job that wrote it ended" in found.problem
    assert found.repair == "snakemake --cores 2 --forcerun results/labels.h5"
    os.utime(path, (time.time() - 120, time.time() - 120))  # written before the job ended: fine
    assert not [f for f in status(cfg) if f.path == path]


def test_status_command_exit_code_and_text(project, capsys):
    config = Path("config.yaml")
    config.write_text(yaml.safe_dump({"fusion": {"experiments": EXPERIMENTS}}))
    assert main(["status", "--no-dry-run"]) == 1  # labels and stores are missing
    out = capsys.readouterr().out
    assert "results/labels.h5: missing" in out and "repair: snakemake --cores 2 --forcerun results/labels.h5" in out


# --- the repairs, run as printed ----------------------------------------------------------------------------------
FUSION = ("--allowed-rules", "train", "evaluate", "report")
EF = {
    "ef": {
        "model": "early_fusion",
        "stores": {"visual": "synthv", "audio": "syntha"},
        "training": {"window": 32, "steps": 8, "pool": 2, "epochs": 1},
    }
}


def check(workdir: Path) -> tuple[int, str]:
    """`emofusion status` in the workdir, its dry run told how this test runs Snakemake."""
    import subprocess

    from conftest import venv_env

    args = on_demo(workdir, "fusion", *FUSION)
    proc = subprocess.run(
        ["emofusion", "status", "--", *args], cwd=workdir, capture_output=True, text=True, env=venv_env(), timeout=300
    )
    return proc.returncode, proc.stdout + proc.stderr


def repair(workdir: Path, command: str) -> None:
    """Run a printed repair command, adding only what points Snakemake at this test's workflow (target first:
    --forcerun takes several values)."""
    words = shlex.split(command)
    assert words[:3] == ["snakemake", "--cores", "2"], command
    proc = snakemake(*on_demo(workdir, "fusion", *words[1:], *FUSION), cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def repairs(text: str) -> list[str]:
    return list(dict.fromkeys(line.split("repair: ", 1)[1] for line in text.splitlines() if "repair: " in line))


@pytest.mark.workflow
def test_each_repair_works_as_printed(workdir):
    make_corpus(workdir / "results")
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["fusion"]["experiments"] = EF
    for modality in ("visual", "audio", "text"):
        cfg["features"][modality]["stores"] = []  # the synthetic stores are the only ones
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(*on_demo(workdir, "fusion", "--cores", "2", *FUSION), cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, out = check(workdir)
    assert code == 0 and "The Snakemake dry run plans nothing" in out, out
    run = workdir / "results/fusion/ef/fold0/seed0"

    # a deleted model: Snakemake alone would say "Nothing to be done" for the report
    (run / "model.pt").unlink()
    code, out = check(workdir)
    assert code == 1 and "no model.pt" in out and "its model.pt is gone" in out, out
    for command in repairs(out):
        repair(workdir, command)
    code, out = check(workdir)
    assert code == 0, out

    # a metrics file edited by hand after evaluation (newer than its inputs: "up to date" to Snakemake)
    time.sleep(2.5)
    metrics = run / "metrics.json"
    metrics.write_text(metrics.read_text() + "\n")
    code, out = check(workdir)
    assert code == 1 and "metrics.json: changed" in out, out
    repair(workdir, repairs(out)[0])
    code, out = check(workdir)
    assert code == 0, out

    # a whole run folder deleted: the report's targets now name the run files, so `fusion` makes it again
    shutil.rmtree(run)
    code, out = check(workdir)
    assert code == 1 and "run folder missing" in out, out
    repair(workdir, repairs(out)[0])
    code, out = check(workdir)
    assert code == 0, out
