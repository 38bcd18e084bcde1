"""emofusion manifest: list the corpus's clips with decoded frame counts, rates and folds."""

from __future__ import annotations

import argparse

from emofusion.commands._common import add_config_arguments

NAME = "manifest"
ORDER = 10
HELP = "list the corpus's clips (Aff-Wild2 layout or a CSV/Parquet manifest) into results/manifest.parquet"
DESCRIPTION = """\
Read the corpus configured under `corpus:` (the Aff-Wild2 ABAW layout, or a CSV/Parquet clip table), decode each
video's stream to count its frames, assign the deterministic folds of `folds:`, and write one Parquet table:
clip, video_id, video, audio, split, fold, annotation, crops, subject, frames, fps.
Fold 0 is the official split; `fold` holds each train/validation clip's cross-validation group (1..k), -1 for
test clips. Bad clip ids and missing videos fail with the file named. Every video is probed first: with
`corpus.on_bad_video: error` (the default) one message lists each empty or undecodable video; with `skip` they
are left out with a warning each and listed in the table's metadata (skipped_videos), as are videos that no
annotation names (unannotated_videos)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="output Parquet path (e.g. results/manifest.parquet)")


def run(args: argparse.Namespace) -> int:
    from emofusion.config import load_config
    from emofusion.corpus import build_manifest
    from emofusion.io import write_parquet
    from emofusion.provenance import provenance

    cfg = load_config(args.config, overrides=args.config_json)
    df = build_manifest(cfg)
    meta = provenance(config={k: cfg[k] for k in ("corpus", "folds")}, seed=cfg["folds"]["seed"])
    meta.update(
        skipped_videos=df.attrs.pop("skipped_videos", {}), unannotated_videos=df.attrs.pop("unannotated_videos", [])
    )
    write_parquet(args.out, df, metadata=meta)
    return 0
