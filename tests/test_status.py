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

from conftest import REPO, demo_subset, snakemake
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

    import h5py

    cfg, _ = project
    path = "results/labels.h5"
    with h5py.File(path, "w") as h5:  # a labels store as far as its header goes
        h5.attrs["targets"], h5.attrs["invalid_value"] = "valence,arousal", -5.0
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


def test_only_the_evaluation_gone_is_evaluated_again_not_retrained(project):
    cfg, _ = project
    run = "results/fusion/rjca_demo/fold0/seed0"
    (Path(run) / "metrics.json").unlink()
    found = findings_under(cfg, run)
    assert [f.problem for f in found] == [
        "incomplete run folder: no metrics.json",
        "the report describes this run but its metrics.json is gone",
    ]
    assert {f.repair for f in found} == {f"snakemake --cores 2 --forcerun {run}/metrics.json"}


def test_an_interrupted_training_is_noted_as_resuming(project):
    cfg, _ = project
    run = Path("results/fusion/rjca_demo/fold0/seed0")
    (run / "model.pt").unlink()
    (run / "resume.pt").write_bytes(b"state")
    (found, *_) = findings_under(cfg, str(run))
    assert found.problem == ("incomplete run folder: no model.pt (resume.pt: the training was interrupted and resumes)")
    assert found.repair == f"snakemake --cores 2 --forcerun {run}/model.pt"


REDO_REPORT = "snakemake --cores 2 --forcerun results/report/results.csv"


def test_a_report_missing_a_file_unreadable_or_from_an_older_version(project):
    cfg, _ = project
    prov = Path("results/report/provenance.json")
    text = prov.read_text()
    Path("results/report/results.md").unlink()
    assert [(f.path, f.problem, f.repair) for f in findings_under(cfg, "results/report")] == [
        ("results/report", "report incomplete: no results.md", REDO_REPORT)
    ]
    Path("results/report/results.md").write_text("table")
    prov.write_text(text[: len(text) // 2])
    assert [(f.path, f.problem, f.repair) for f in findings_under(cfg, "results/report")] == [
        ("results/report/provenance.json", "not readable JSON", REDO_REPORT)
    ]
    older = json.loads(text)
    for entry in older["runs"]:
        del entry["files"]  # what a report of an earlier emofusion recorded
    prov.write_text(json.dumps(older))
    found = [f for f in status(cfg) if "older emofusion" in f.problem]
    assert len(found) == 2 and {f.repair for f in found} == {REDO_REPORT}


def test_an_evaluated_run_the_report_lacks(project):
    cfg, _ = project
    prov = Path("results/report/provenance.json")
    data = json.loads(prov.read_text())
    data["runs"] = [e for e in data["runs"] if "unimodal_audio" not in e["path"]]
    prov.write_text(json.dumps(data))
    (found,) = findings_under(cfg, "results/fusion/unimodal_audio")
    assert found.problem == "evaluated, but the report does not include it" and found.repair == REDO_REPORT


def test_damaged_stores_are_found_by_their_header(project):
    """A truncated labels store, a feature store that is not HDF5 and a face store of a manifest clip cut short:
    each found as damaged (Snakemake sees them as up to date), with the command that makes it again."""
    import h5py
    import numpy as np

    cfg, _ = project
    cfg["features"]["audio"]["stores"] = ["egemaps"]
    with h5py.File("results/labels.h5", "w") as h5:
        h5.attrs["targets"], h5.attrs["invalid_value"] = "valence,arousal", -5.0
        h5.create_dataset("x", data=np.zeros(100_000))
    Path("results/features/audio").mkdir(parents=True)
    Path("results/features/audio/egemaps.h5").write_text("not a store")
    face = Path("results/faces/video5.h5")
    face.parent.mkdir()
    with h5py.File(face, "w") as h5:
        h5.create_dataset("crops", data=np.zeros((40, 8, 8, 3), np.uint8))
    assert "results/labels.h5" not in {f.path for f in status(cfg) if "damaged" in f.problem}  # whole: fine
    with open("results/labels.h5", "r+b") as f:
        f.truncate(4096)
    found = {f.path: f for f in status(cfg) if f.problem.startswith("damaged")}
    assert set(found) == {"results/labels.h5", "results/features/audio/egemaps.h5", "results/faces/video5.h5"}
    for path, f in found.items():
        assert f.repair == f"snakemake --cores 2 --forcerun {path}", f


def test_what_a_killed_snakemake_leaves_and_the_repairs_that_get_past_it(project):
    """Its lock (every later run refuses to start) and an output marked incomplete (Snakemake refuses even a
    --forcerun until told --rerun-incomplete): found first, and every repair carries --rerun-incomplete."""
    from base64 import urlsafe_b64encode

    cfg, _ = project
    run = "results/fusion/rjca_demo/fold0/seed0"
    Path(".snakemake/locks").mkdir(parents=True)
    Path(".snakemake/locks/0.input.lock").write_text("results/manifest.parquet\n")
    marker = Path(".snakemake/incomplete") / urlsafe_b64encode(f"{run}/log.jsonl".encode()).decode()
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    Path(".snakemake/incomplete/migration_underway").write_text("")  # not a marker
    found = status(cfg)
    assert [(f.path, f.repair) for f in found[:2]] == [
        (".snakemake/locks", "snakemake --unlock"),
        (f"{run}/log.jsonl", "snakemake --cores 2 --rerun-incomplete"),
    ]
    assert all(f.repair.startswith("snakemake --cores 2 --rerun-incomplete") for f in found[1:]), found
    (Path(run) / "log.jsonl").unlink()  # a marker of a file that is gone stops nothing
    assert not [f for f in status(cfg) if "incomplete" in f.repair]


def test_status_exit_code_follows_the_dry_run(project, monkeypatch, capsys):
    """Exit 1 when the dry run plans jobs or fails, though no file is wrong; 0 when it plans nothing."""
    import emofusion.status as st

    monkeypatch.setattr(st, "status", lambda cfg, root: [])
    Path("config.yaml").write_text(yaml.safe_dump({"fusion": {"experiments": EXPERIMENTS}}))
    monkeypatch.setattr(st, "dry_run", lambda root, args: ({"train": 2, "evaluate": 2, "all": 1}, ""))
    assert main(["status"]) == 1
    assert "The Snakemake dry run plans 4 job(s) (`snakemake --cores 2` runs them): evaluate 2, train 2" in (
        capsys.readouterr().out
    )
    monkeypatch.setattr(st, "dry_run", lambda root, args: ({"all": 1}, ""))
    assert main(["status"]) == 0 and "The Snakemake dry run plans nothing." in capsys.readouterr().out


def test_a_failed_dry_run_is_shown_and_fails_status(tmp_path, monkeypatch, capsys):
    """A real dry run that fails (here: no Snakefile in the folder): its last lines, exit 1."""
    monkeypatch.chdir(tmp_path)
    Path("config.yaml").write_text(yaml.safe_dump({"fusion": {"experiments": {}}}))
    assert main(["status"]) == 1
    out = capsys.readouterr().out
    assert "The Snakemake dry run failed (its message follows); fix that first:" in out
    assert "Snakefile" in out.split("fix that first:")[1], out


# --- the repairs, run as printed ----------------------------------------------------------------------------------
# A project of the workflow whose whole default target is cheap: two demo clips that ship their aligned crops (no
# face detection) and the synthetic corpus's manifest, labels and stores for the fusion stage. Each repair runs
# exactly as printed, with only --snakefile added (the test's folder holds config.yaml, results/ and .snakemake/).
EF = {
    "ef": {
        "model": "early_fusion",
        "stores": {"visual": "synthv", "audio": "syntha"},
        "training": {"window": 32, "steps": 8, "pool": 2, "epochs": 1},
    }
}
RUN = "results/fusion/ef/fold0/seed0"


def small_project(workdir: Path, *, experiments: dict, visual_stores: list[str]) -> None:
    """config.yaml on two demo clips (links dated before every output), the synthetic fusion corpus; then a full
    `snakemake --cores 2` as a user runs it."""
    corpus = demo_subset(workdir / "aw2")
    for link in corpus.rglob("*"):  # the links' own times count: older than the outputs made next
        os.utime(link, (time.time() - 3600,) * 2, follow_symlinks=False)
    if experiments:
        make_corpus(workdir / "results")
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["corpus"] = {**cfg["corpus"], "root": str(corpus)}
    cfg["folds"]["k"] = 0  # two clips: the official split only
    cfg["fusion"] = {**cfg["fusion"], "experiments": experiments, "seeds": [0]}
    for modality in ("visual", "audio", "text"):
        cfg["features"][modality]["stores"] = visual_stores if modality == "visual" else []
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake("--cores", "2", "--snakefile", str(REPO / "Snakefile"), cwd=workdir, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, out = check(workdir)
    assert code == 0, out


def check(workdir: Path) -> tuple[int, str]:
    """`emofusion status` in the workdir, its dry run told where the Snakefile is."""
    from conftest import run_status

    return run_status(workdir)


def repairs(text: str) -> list[str]:
    return list(dict.fromkeys(line.split("repair: ", 1)[1] for line in text.splitlines() if "repair: " in line))


def repaired(workdir: Path, *expected: str) -> str:
    """Status finds the damage with the `expected` repairs (in order); each runs as printed; then status is clean
    and its dry run plans nothing. Snakemake's output of the repairs."""
    code, out = check(workdir)
    assert code == 1 and repairs(out) == list(expected), out
    logs = ""
    for command in expected:
        words = shlex.split(command)
        assert words[0] == "snakemake", command
        proc = snakemake(*words[1:], "--snakefile", str(REPO / "Snakefile"), cwd=workdir, timeout=600)
        logs += proc.stdout + proc.stderr
        assert proc.returncode == 0, logs
    code, out = check(workdir)
    assert code == 0 and "The Snakemake dry run plans nothing" in out, out
    return logs


def ran(logs: str) -> set[str]:
    """The rules Snakemake ran."""
    rules = {line.split()[1].rstrip(":") for line in logs.splitlines() if line.startswith(("rule ", "localrule "))}
    return rules - {"all", "features", "fusion"}  # target rules: no work of their own


@pytest.mark.workflow
def test_each_run_and_report_repair_works_as_printed(workdir):
    small_project(workdir, experiments=EF, visual_stores=[])
    run = workdir / RUN
    redo = "snakemake --cores 2 --forcerun results/report/results.csv"

    # a deleted model: Snakemake alone would say "Nothing to be done" for the report
    (run / "model.pt").unlink()
    (run / "resume.pt").write_bytes(b"an interrupted training's state, unreadable")
    assert ran(repaired(workdir, f"snakemake --cores 2 --forcerun {RUN}/model.pt")) == {"train", "evaluate", "report"}

    # only the evaluation gone: evaluated again, the model kept
    model = (run / "model.pt").stat().st_mtime_ns
    (run / "metrics.json").unlink()
    assert ran(repaired(workdir, f"snakemake --cores 2 --forcerun {RUN}/metrics.json")) == {"evaluate", "report"}
    assert (run / "model.pt").stat().st_mtime_ns == model

    # a metrics file edited by hand after evaluation (newer than its inputs: "up to date" to Snakemake)
    time.sleep(2.5)
    metrics = run / "metrics.json"
    metrics.write_text(metrics.read_text() + "\n")
    repaired(workdir, f"snakemake --cores 2 --forcerun {RUN}/metrics.json", redo)

    # the report: a file gone, provenance unreadable, from an older emofusion, a run it lacks
    report = workdir / "results/report"
    (report / "results.md").unlink()
    assert ran(repaired(workdir, redo)) == {"report"}
    prov = report / "provenance.json"
    prov.write_text(prov.read_text()[:100])
    repaired(workdir, redo)
    older = json.loads(prov.read_text())
    del older["runs"][0]["files"]
    prov.write_text(json.dumps(older))
    repaired(workdir, redo)
    older["runs"] = []
    prov.write_text(json.dumps(older))
    repaired(workdir, redo)

    # a whole run folder deleted: the report's targets name the run files, so the default target makes it again
    shutil.rmtree(run)
    repaired(workdir, f"snakemake --cores 2 --forcerun {RUN}/model.pt")

    # labels cut short: Snakemake sees them as up to date; the DAG refuses to train on them, status rebuilds them
    labels = workdir / "results/labels.h5"
    with open(labels, "r+b") as f:
        f.truncate(labels.stat().st_size // 2)
    assert "labels" in ran(repaired(workdir, "snakemake --cores 2 --forcerun results/labels.h5"))


@pytest.mark.workflow
def test_a_damaged_face_store_and_a_killed_run_are_repaired_as_printed(workdir):
    """A face store cut short (a full disk): Snakemake sees it as up to date, the DAG refuses to embed it, status
    names it with the --forcerun that remakes it and its shard and store. Then what a killed run leaves: its lock
    and an output marked incomplete, each with the command that gets past it."""
    from base64 import urlsafe_b64encode

    small_project(workdir, experiments={}, visual_stores=["fer"])
    face = "results/faces/demo07-30-320x180.h5"
    with open(workdir / face, "r+b") as f:
        f.truncate((workdir / face).stat().st_size // 2)
    # a plain run: Snakemake leaves the shard that reads it as it is (an input function's error means "no producer"
    # to it where the output exists), so nothing is removed, and the console says why and what to run
    proc = snakemake("--cores", "2", "--snakefile", str(REPO / "Snakefile"), cwd=workdir)
    out = proc.stdout + proc.stderr
    assert f"{face} is damaged" in out and f"rebuild it first: snakemake --cores 2 --forcerun {face}" in out, out
    assert "Nothing to be done" in out, out
    assert (workdir / "results/features/visual/fer/demo07-30-320x180.h5").is_file()
    logs = repaired(workdir, f"snakemake --cores 2 --forcerun {face}")
    assert ran(logs) == {"faces", "embed_visual", "embed_merge"}, logs

    (workdir / ".snakemake/locks").mkdir(exist_ok=True)
    (workdir / ".snakemake/locks/0.output.lock").write_text(f"{workdir / face}\n")
    marker = workdir / ".snakemake/incomplete" / urlsafe_b64encode(face.encode()).decode()
    marker.parent.mkdir(exist_ok=True)
    marker.write_text('{"external_jobid": null}')
    logs = repaired(workdir, "snakemake --unlock", "snakemake --cores 2 --rerun-incomplete")
    assert ran(logs) == {"faces", "embed_visual", "embed_merge"}, logs


def test_a_store_is_checked_by_where_it_lies_in_the_project_not_above_it(tmp_path):
    """A project inside a folder named faces: its labels and feature stores are not checked as face stores (which
    would call a good store damaged, with a repair that never clears it)."""
    import h5py
    import numpy as np

    from emofusion.status import damage

    root = tmp_path / "faces" / "project"
    (root / "results").mkdir(parents=True)
    labels = root / "results" / "labels.h5"
    with h5py.File(labels, "w") as h5:
        h5.attrs["targets"], h5.attrs["invalid_value"] = "valence,arousal", -5.0
        h5.create_dataset("x", data=np.zeros(10))
    assert damage(labels, root) is None
    assert damage(labels) is not None  # what the absolute path made of it before
