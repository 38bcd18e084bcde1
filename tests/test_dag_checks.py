"""Nothing starts that the DAG could know would fail: a misspelt name in the config or a damaged input stops Snakemake
while it builds the DAG (dry runs included), naming the key or file and the repair, before it removes the outputs
of the jobs that would fail (a transcript, model.pt, labels.h5)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from conftest import DEMO, REPO, demo_subset, on_demo, snakemake
from fusion_corpus import make_corpus

VIDEO = "demo01-30-320x180"


def old(*paths: Path) -> None:
    """Date files a minute back: older than anything the test writes afterwards (a damaged input is newer), newer
    than the checkout's demo files."""
    past = time.time() - 60
    for p in paths:
        os.utime(p, (past, past))


def outputs(workdir: Path, files: dict[str, bytes]) -> dict[Path, bytes]:
    written = {}
    for name, data in files.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written[path] = data
    old(*written)
    return written


def refused(workdir: Path, *args: str, config: tuple[str, ...] = ()) -> str:
    """Run Snakemake (for real, then as a dry run): both must stop while building the DAG; the console text."""
    text = ""
    for dry in ((), ("-n",)):
        proc = snakemake(*on_demo(workdir, *args, *dry, "--cores", "1"), *config, cwd=workdir)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert "Job stats" not in out, out  # stopped before any job was planned (names: while reading the workflow)
        text += out
    return text


def test_a_misspelt_asr_model_stops_the_dag_and_keeps_the_transcript(workdir):
    kept = outputs(workdir, {f"results/transcripts/{VIDEO}.parquet": b"a good transcript"})
    out = refused(workdir, f"results/transcripts/{VIDEO}.parquet", config=("asr={model: tiny.en-bundlde}",))
    assert "asr.model: unknown faster-whisper model 'tiny.en-bundlde'" in out, out
    assert all(p.read_bytes() == data for p, data in kept.items())
    assert "Traceback (most recent call last)" not in out


def test_a_misspelt_experiment_model_stops_the_dag_and_keeps_model_pt(workdir):
    run = "results/fusion/x/fold0/seed0"
    kept = outputs(
        workdir, {f"{run}/{n}": f"{n} of a good run".encode() for n in ("model.pt", "log.jsonl", "run.json")}
    )
    out = refused(workdir, f"{run}/model.pt", config=("fusion={experiments: {x: {model: rjcaa}}}",))
    assert "fusion.experiments.x.model: unknown model 'rjcaa'" in out, out
    assert all(p.read_bytes() == data for p, data in kept.items())


def test_the_model_names_the_workflow_checks_are_the_registry_s():
    """The config check reads the names from the model package's source (the registry imports torch: seconds per
    Snakemake invocation); they must be exactly what the registry registers."""
    from emofusion.models import VARIANTS, list_models
    from emofusion.training.experiments import model_names

    assert model_names() == (list_models(), sorted(VARIANTS))


def synthetic_fusion(workdir: Path) -> Path:
    """The synthetic corpus's manifest, labels and audio store, the store under a registered backbone's name
    (egemaps) read by experiment `ea`, and one trained run of it (dated before the store); the run folder."""
    corpus = make_corpus(workdir / "results", modalities=("audio",))
    store = workdir / "results/features/audio/egemaps.h5"
    shutil.move(corpus["stores"]["audio"], store)
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["fusion"]["experiments"] = {"ea": {"model": "unimodal_audio", "stores": {"audio": "egemaps"}}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = workdir / "results/fusion/ea/fold0/seed0"
    outputs(workdir, {f"{run.relative_to(workdir)}/{n}": b"good" for n in ("model.pt", "log.jsonl", "run.json")})
    old(*(workdir / "results").rglob("*.*"))
    return run


def test_a_truncated_feature_store_stops_the_dag_and_keeps_model_pt_and_labels(workdir):
    run = synthetic_fusion(workdir)
    store = workdir / "results/features/audio/egemaps.h5"
    labels = (workdir / "results/labels.h5").read_bytes()
    with open(store, "r+b") as f:  # cut short (a full disk, a copy that stopped): newer than every run
        f.truncate(store.stat().st_size // 2)
    out = refused(workdir, str((run / "model.pt").relative_to(workdir)))
    repair = "snakemake --cores 2 --forcerun results/features/audio/egemaps.h5"
    assert "results/features/audio/egemaps.h5 is damaged" in out and repair in out, out
    assert (run / "model.pt").read_bytes() == b"good" and (workdir / "results/labels.h5").read_bytes() == labels
    # the repair as printed passes the check: it makes the store again, so its old content is never read
    args = on_demo(workdir, "-n", "--quiet", "rules", *repair.split()[1:])
    proc = snakemake(*args, cwd=workdir)
    assert proc.returncode == 0 and "embed_merge" in proc.stdout, proc.stdout + proc.stderr


def test_a_bad_annotation_file_stops_the_dag_and_keeps_labels(workdir):
    """A header broken: refused while the DAG is built. A row broken (found only by reading the file): the labels
    job fails and Snakemake puts the last good labels back (update())."""
    root = demo_subset(workdir / "aw2")
    config = workdir / "config.yaml"  # two clips: the official split only
    config.write_text(config.read_text().replace("folds:\n  k: 3\n", "folds:\n  k: 0\n", 1))

    def labels(*args: str) -> tuple[int, str]:
        argv = ["results/labels.h5", *args, "--cores", "1", "--snakefile", str(REPO / "Snakefile"), "--config"]
        proc = snakemake(*argv, f"corpus={{root: {root}}}", cwd=workdir, timeout=300)
        return proc.returncode, proc.stdout + proc.stderr

    code, out = labels()
    assert code == 0, out
    good = (workdir / "results/labels.h5").read_bytes()
    ann = next(root.glob("annotations/*/*/demo07-30-320x180.txt"))
    rows = ann.resolve().read_text().split("\n")
    ann.unlink()
    ann.write_text("\n".join(["valence;arousal", *rows[1:]]))  # edited in a spreadsheet: newer than labels.h5
    for dry in ((), ("-n",)):
        code, out = labels(*dry)
        assert code != 0 and "Job stats" not in out, out
        assert f"{ann}: first line is 'valence;arousal'" in out and "fix the file" in out, out
    assert (workdir / "results/labels.h5").read_bytes() == good

    ann.write_text("\n".join([rows[0], *rows[1:4], "0.1;0.2", *rows[5:]]))
    code, out = labels()
    assert code != 0 and f"{ann}: line 5" in out, out
    assert "Restored previous version of results/labels.h5" in out, out
    assert (workdir / "results/labels.h5").read_bytes() == good
    assert DEMO.is_dir()


@pytest.mark.workflow
def test_a_failing_transcription_puts_the_previous_transcript_back(workdir):
    """What no header check can see (an audio file cut short) fails the transcribe job; the previous transcript,
    hours of Whisper on a large corpus, is put back (update()) instead of being lost."""
    target = f"results/transcripts/{VIDEO}.parquet"
    proc = snakemake(*on_demo(workdir, target, "--cores", "2"), cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    good = (workdir / target).read_bytes()
    wav = workdir / f"results/audio/{VIDEO}.wav"
    with open(wav, "r+b") as f:
        f.truncate(20)
    proc = snakemake(*on_demo(workdir, target, "--cores", "2"), cwd=workdir, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "rule transcribe" in out, out
    assert f"Restored previous version of {target}" in out, out
    assert (workdir / target).read_bytes() == good
