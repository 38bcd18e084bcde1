"""The fusion rules end to end on a small synthetic corpus (stores written where the embedding stage puts them):
train -> evaluate -> report, then what a change reruns. Only the fusion rules may run (--allowed-rules), so the
test does not depend on the extraction stages."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import on_demo, planned_jobs, snakemake
from fusion_corpus import make_corpus

FUSION_RULES = ("--allowed-rules", "train", "evaluate", "report")
EXPERIMENTS = {
    "ef": {
        "model": "early_fusion",
        "stores": {"visual": "synthv", "audio": "syntha"},
        "training": {"window": 32, "steps": 8, "pool": 2, "epochs": 2},
    },
    "tcn": {
        "model": "rjcma",
        "preset": "demo_frame",
        "stores": {"visual": "synthv", "audio": "syntha", "text": "syntht"},
        "model_options": {"tcn_channels": {"visual": [16], "audio": [16], "text": [16]}},
        "training": {"window": 32, "hop": 24, "steps": 32, "epochs": 2},
    },
}


def jobs(workdir: Path, *args: str) -> dict[str, int]:
    proc = snakemake(*on_demo(workdir, *args, *FUSION_RULES, "--cores", "2"), cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return planned_jobs(proc.stdout)


def set_experiments(workdir: Path, experiments: dict) -> None:
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["fusion"]["experiments"] = experiments
    cfg["fusion"]["seeds"] = [0]  # one run per experiment: the rules are under test here, not the seed spread
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))


def check_snakemake_report(workdir: Path) -> None:
    """`snakemake --report report.html` on the finished run: Snakemake's self-contained HTML report holds the
    results table and the plots the report rule declares with report()."""
    html = workdir / "report.html"
    proc = snakemake(*on_demo(workdir, "fusion", "--report", str(html), *FUSION_RULES), cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = html.read_text()
    # the page carries each declared file as a data URI in its `results` object, with the caption
    results = json.loads(re.search(r"var results = (\{.*?\});\n", text, re.DOTALL).group(1))
    report = workdir / "results/report"
    table = results["results/report/results.csv"]
    assert base64.b64decode(table["data_uri"].split("base64,", 1)[1]) == (report / "results.csv").read_bytes()
    assert "concordance correlation coefficient" in table["caption"]
    plots = {Path(k).name for k, v in results.items() if v["mime_type"] == "image/png"}
    assert plots == {p.name for p in (report / "plots").glob("*.png")} and "ccc_per_model.png" in plots


@pytest.mark.workflow
def test_fusion_rules_train_evaluate_report_and_rerun_only_what_changed(workdir):
    make_corpus(workdir / "results")
    set_experiments(workdir, EXPERIMENTS)
    assert jobs(workdir, "fusion", "-n", "--quiet", "rules") == {"train": 2, "evaluate": 2, "report": 1, "fusion": 1}
    jobs(workdir, "fusion")
    for name in EXPERIMENTS:
        run = workdir / "results/fusion" / name / "fold0/seed0"
        assert {p.name for p in run.iterdir()} == {
            "model.pt",
            "log.jsonl",
            "run.json",
            "predictions.parquet",
            "metrics.json",
        }
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["splits"]["validation"]["raw"]["mean"] > 0.3, (name, metrics["splits"]["validation"])
        assert (workdir / "logs/train" / name / "fold0/seed0.log").is_file()
    report = workdir / "results/report"
    assert (report / "results.csv").is_file() and (report / "submission/check.json").is_file()
    assert {p.stem for p in (report / "submission").glob("*.csv")} == set(EXPERIMENTS)
    assert jobs(workdir, "fusion", "-n", "--quiet", "rules") == {}
    assert (workdir / "logs/benchmarks/train/ef/fold0/seed0.tsv").is_file()
    check_snakemake_report(workdir)

    # one experiment's learning rate: that experiment's train and evaluate, and the report
    changed = {**EXPERIMENTS, "ef": {**EXPERIMENTS["ef"], "training": {**EXPERIMENTS["ef"]["training"], "lr": 0.01}}}
    set_experiments(workdir, changed)
    assert jobs(workdir, "fusion", "-n", "--quiet", "rules") == {"train": 1, "evaluate": 1, "report": 1, "fusion": 1}
    dry = snakemake(*on_demo(workdir, "fusion", "-n", *FUSION_RULES), cwd=workdir)
    assert "wildcards: experiment=ef, fold=0, seed=0" in dry.stdout and "experiment=tcn" not in dry.stdout

    # the smoothing candidates reach evaluation only; a second seed adds runs without touching the first
    set_experiments(workdir, EXPERIMENTS)
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["fusion"]["smoothing"] = {"windows": [1, 3]}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert jobs(workdir, "fusion", "-n", "--quiet", "rules") == {"evaluate": 2, "report": 1, "fusion": 1}
    cfg["fusion"]["seeds"] = [0, 1]
    cfg["fusion"]["smoothing"] = {"windows": [1, 5, 11, 21, 31, 51, 75]}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert jobs(workdir, "fusion", "-n", "--quiet", "rules") == {"train": 2, "evaluate": 2, "report": 1, "fusion": 1}
    # without the report, `fusion` makes it again from the runs: no train or evaluate job, no extraction
    shutil.rmtree(workdir / "results/report")
    cfg["fusion"]["seeds"] = [0]
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert jobs(workdir, "fusion", "-n", "--quiet", "rules") == {"report": 1, "fusion": 1}


def test_the_sample_submission_file_is_an_input_of_the_report(workdir):
    """Replacing the organisers' sample file must rerun the report (its rows decide the submission's rows)."""
    sample = workdir / "sample.csv"
    sample.write_text("image_location,valence,arousal\n")
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["report"] = {**cfg.get("report", {}), "sample_submission": str(sample)}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    dry = snakemake(*on_demo(workdir, "results/report/results.csv", "-n"), cwd=workdir)
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out
    job = out[out.index("rule report:") :]
    assert str(sample) in job.split("output:")[0], job
    assert "results/report/provenance.json" in job.split("log:")[0]
