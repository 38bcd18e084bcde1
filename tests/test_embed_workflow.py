"""The embedding stage through Snakemake: a store built and rebuilt only where its inputs changed, and an unknown
store named before any job runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emofusion.features.store import FeatureStore


@pytest.mark.workflow
def test_workflow_builds_the_visual_store_and_reruns_only_what_changed(tmp_path):
    """The fer store of two clips through Snakemake; then a changed fer option reruns only fer's shards and merge,
    another backbone's option reruns nothing, and a clip added to the corpus embeds that clip only."""
    import yaml

    from conftest import REPO, demo_subset, snakemake

    corpus = demo_subset(tmp_path / "corpus")
    wd = tmp_path / "wd"
    wd.mkdir()
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["corpus"]["root"] = str(corpus)

    def run(*args):
        (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
        proc = snakemake(
            "results/features/visual/fer.h5",
            "--cores",
            "2",
            *args,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(wd),
            cwd=wd,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    def planned(out):  # rule -> jobs, from the dry run's job table
        return {
            rule: int(n)
            for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, re.MULTILINE)
            if rule not in ("total", "count")
        }

    run()
    store = FeatureStore(wd / "results/features/visual/fer.h5", modality="visual", backbone="fer", width=128)
    assert store.clips == ["demo07-30-320x180", "demo09-30-320x180"]
    for clip in store.clips:
        feats, valid = store.read(clip)
        assert valid.any() and (feats[valid].std(0) > 0).any() and (feats[~valid] == 0).all()
    assert store.attrs["licence"].startswith("MIT") and store.attrs["provenance"]["shards"]

    cfg["features"]["visual"]["backbones"] = {"pyemotion": {"probabilities": True}}
    assert planned(run("-n")) == {}  # another backbone's options: nothing to do
    cfg["features"]["visual"]["backbones"] = {"fer": {"probabilities": True}}
    assert planned(run("-n")) == {"embed_visual": 2, "embed_merge": 1}
    cfg["features"]["visual"]["backbones"] = {}
    demo_subset(corpus, ("demo08-30-320x180",))
    plan = planned(run("-n"))
    assert plan == {"faces": 1, "embed_visual": 1, "embed_merge": 1}, plan


def test_an_unknown_store_stops_the_workflow_naming_the_registered_backbones(tmp_path):
    import yaml

    from conftest import on_demo, snakemake

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    cfg["features"]["visual"]["stores"] = ["fer", "nosuchnet"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(*on_demo(tmp_path, "features", "-n"), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "unknown backbone 'nosuchnet'" in out and "fer" in out and "pyemotion" in out, out
