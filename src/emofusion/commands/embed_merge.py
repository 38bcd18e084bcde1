"""emofusion embed-merge: a (modality, backbone)'s shards into the feature store that training reads."""

from __future__ import annotations

import argparse

from emofusion.commands._common import add_config_arguments
from emofusion.layout import MODALITIES

NAME = "embed-merge"
ORDER = 61
HELP = "merge a backbone's feature shards into results/features/<modality>/<backbone>.h5"
DESCRIPTION = """\
Copy the clip groups of every shard (the outputs of `emofusion embed` for one modality and backbone) into one
store, written atomically, its clips in sorted order so the bytes do not depend on the order of the shards.
The shards must agree on schema version, modality, backbone, width and weights sha256: a difference fails
naming both files (rerun the stale shard). With --clips every listed clip must be in a shard (clips of other
shards are left out) and no clip may be in two. The root attributes are the shards'; provenance records this
merge and each shard's config hash."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--modality", required=True, choices=MODALITIES)
    p.add_argument("--backbone", required=True)
    p.add_argument("--shards", nargs="+", required=True, metavar="H5")
    p.add_argument("--clips", nargs="+", metavar="CLIP", help="clips the store must hold (default: all shards')")
    p.add_argument("--out", required=True, help="output store (e.g. results/features/visual/fer.h5)")


def run(args: argparse.Namespace) -> int:
    from emofusion.config import load_config
    from emofusion.features.stage import backbone_config, merge_shards
    from emofusion.provenance import provenance

    cfg = load_config(args.config, overrides=args.config_json)
    prov = provenance(
        config=backbone_config(cfg["features"], args.modality, args.backbone),
        modality=args.modality,
        backbone=args.backbone,
        merged=len(args.shards),
    )
    merge_shards(
        args.shards, args.out, provenance=prov, clips=args.clips, modality=args.modality, backbone=args.backbone
    )
    return 0
