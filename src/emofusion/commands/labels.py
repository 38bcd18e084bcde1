"""emofusion labels: per-frame valence/arousal with validity masks, on each clip's frame timeline."""

from __future__ import annotations

import argparse

from emofusion.commands._common import add_config_arguments

NAME = "labels"
ORDER = 20
HELP = "read the annotation files into one HDF5 label store (per clip: values, valid mask)"
DESCRIPTION = """\
For every clip of the manifest, read its annotation file (header `valence,arousal`, one row per frame, -5 = not
annotated), reconcile its row count with the decoded frame count (at most corpus.max_annotation_mismatch rows;
extra rows dropped, missing rows not annotated; logged and recorded), and write results/labels.h5 with a group
per clip holding `values (N, 2)` and `valid (N, 2)`. Clips without annotations (test) are all invalid."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--manifest", required=True, help="results/manifest.parquet from `emofusion manifest`")
    p.add_argument("--out", required=True, help="output HDF5 path (e.g. results/labels.h5)")


def run(args: argparse.Namespace) -> int:
    from emofusion.config import load_config
    from emofusion.corpus import read_manifest
    from emofusion.labels import write_labels
    from emofusion.provenance import provenance

    cfg = load_config(args.config, overrides=args.config_json)
    manifest = read_manifest(args.manifest)
    write_labels(
        manifest,
        args.out,
        max_mismatch=cfg["corpus"]["max_annotation_mismatch"],
        provenance=provenance(config={"corpus": cfg["corpus"]}),
    )
    return 0
