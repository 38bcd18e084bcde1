"""The embedded demo corpus is complete and exercises what it claims to (read through the real readers)."""

import numpy as np
import pytest

from conftest import DEMO
from emofusion.config import load_config
from emofusion.corpus import build_manifest
from emofusion.labels import clip_labels


@pytest.fixture(scope="module")
def manifest():
    return build_manifest(load_config(overrides={"corpus": {"root": str(DEMO)}})).set_index("clip")


def test_demo_has_every_split_and_licences(manifest):
    assert set(manifest["split"]) == {"train", "validation", "test"}
    assert (DEMO / "ATTRIBUTION.md").is_file() and len(list((DEMO / "LICENSES").iterdir())) >= 3
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size < 8 * 2**20, f"the demo corpus grew to {size / 2**20:.1f} MiB"


def test_demo_two_person_video(manifest):
    left, right = manifest.loc["demo06-30-640x180_left"], manifest.loc["demo06-30-640x180_right"]
    assert left["video"] == right["video"] and left["fold"] == right["fold"]


def test_demo_crops_and_gaps(manifest):
    with_crops = manifest[manifest["crops"].notna()]
    assert 1 <= len(with_crops) < len(manifest)
    for clip, row in manifest.iterrows():
        if row["annotation"] is None:
            continue
        lab = clip_labels(row["annotation"], int(row["frames"]), max_mismatch=30)
        assert lab.valid.any() and not lab.valid.all(), f"{clip} should have labelled frames and -5 gaps"
        assert np.all(np.abs(lab.values[lab.valid]) <= 1)


def test_demo_mismatched_annotation_is_reconciled(manifest):
    row = manifest.loc["demo04-30-320x180"]
    lab = clip_labels(row["annotation"], int(row["frames"]), max_mismatch=30)
    assert lab.rows_in_file == row["frames"] + 2 and lab.reconciled == -2
