"""emofusion faces: the subject's aligned face in every frame of one clip, into results/faces/<clip>.h5."""

from __future__ import annotations

import argparse

from emofusion.commands._common import add_config_arguments

NAME = "faces"
ORDER = 30
HELP = "detect, track and align the subject's face in every frame of a clip (or read its pre-aligned crops)"
DESCRIPTION = """\
Decode the clip's video once as a stream, in batches of faces.batch_size frames; run MTCNN (facenet-pytorch, its
shipped weights) on each batch on faces.device; choose the subject's face in each frame (for <video>_left /
<video>_right clips the face in that half of the frame; otherwise the largest, then the same face frame after
frame); align it with a similarity transform from its 5 landmarks to the ArcFace template scaled to faces.size;
write one HDF5 store with exactly one row per decoded frame:
  crops (N, S, S, 3) uint8, boxes (N, 4), landmarks (N, 5, 2), probability (N,), valid (N,), filled (N,),
  timestamps (N,) seconds; root attributes: schema_version, clip, video, source, size, counts, provenance.
With --crops DIR (corpora that ship aligned crops, e.g. Aff-Wild2 cropped_aligned/<clip>/00001.jpg, number =
frame + 1) the same store is built from the images without detection; missing images are frames without a face.
Frames without a face are invalid (faces.fill_gaps copies the nearest face into short gaps, flagged in
`filled`). A video without any face gives an all-invalid store and a warning. An unreadable, empty, truncated or
audio-only file fails with the file named; nothing is left at --out on failure."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--video", required=True, help="the clip's video (gives the frame timeline in both modes)")
    p.add_argument("--clip", help="clip id (default: the video's file stem); a _left/_right suffix picks the side")
    p.add_argument("--crops", metavar="DIR", help="folder of pre-aligned crops %%05d.jpg (skips detection)")
    p.add_argument("--out", required=True, help="output HDF5 path (e.g. results/faces/<clip>.h5)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch and the video decoder (default 0: torch's default, one decoder thread)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from emofusion.config import load_config
    from emofusion.corpus import validate_clip_id
    from emofusion.faces.stage import FaceSettings, extract_faces, faces_from_crops
    from emofusion.provenance import provenance

    cfg = load_config(args.config, overrides=args.config_json)
    settings = FaceSettings.from_config(cfg["faces"])
    clip = validate_clip_id(args.clip or Path(args.video).stem, source="--clip")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    source = "cropped_aligned" if args.crops else "mtcnn"
    prov = provenance(config={"faces": cfg["faces"]}, source=source, video=args.video, crops=args.crops)
    if args.crops:
        faces_from_crops(args.crops, args.video, args.out, clip=clip, settings=settings, provenance=prov)
    else:
        extract_faces(args.video, args.out, clip=clip, settings=settings, threads=max(1, args.threads),
                      provenance=prov)
    return 0
