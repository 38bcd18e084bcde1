"""emofusion faces: the subject's aligned face in every frame of a clip (or of each clip of a shard), into
results/faces/<clip>.h5."""

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
audio-only file fails with the file named; nothing is left at --out on failure.
A shard (--video, --out and, if given, --clip and --crops repeated once per clip) runs its clips one after
another in one process, MTCNN loaded once; each store is written as its clip ends (a killed shard loses only the
clip it was on); a clip with a bad input is skipped and named at the end (exit status 1). Decoding, detection and
the writes overlap; faces.decode picks the GPU's decoder (NVDEC) or the CPU's."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument(
        "--video",
        action="append",
        required=True,
        help="the clip's video (gives the frame timeline in both modes); repeat it, with --out (and "
        "--clip, --crops) as often, for a shard of clips in one process",
    )
    p.add_argument(
        "--clip",
        action="append",
        default=[],
        help="clip id (default: the video's file stem); a _left/_right suffix picks the side",
    )
    p.add_argument(
        "--crops",
        metavar="DIR",
        action="append",
        default=[],
        help="folder of pre-aligned crops %%05d.jpg (skips detection)",
    )
    p.add_argument("--out", action="append", required=True, help="output HDF5 path (e.g. results/faces/<clip>.h5)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch and the video decoder (default 0: torch's default, one decoder thread)",
    )


def parse_jobs(args: argparse.Namespace) -> list:
    """The shard's clips from the repeated --video/--clip/--crops/--out options (the i-th of each), ids
    validated."""
    from pathlib import Path

    from emofusion.corpus import validate_clip_id
    from emofusion.errors import ConfigError
    from emofusion.faces.stage import FaceJob

    n = len(args.video)
    if len(args.out) != n or len(args.clip) not in (0, n) or len(args.crops) not in (0, n):
        raise ConfigError(
            f"give --video and --out once per clip ({n} --video, {len(args.out)} --out), and --clip "
            f"and --crops either never or once per clip ({len(args.clip)} --clip, {len(args.crops)} "
            "--crops)"
        )
    jobs = []
    for i in range(n):
        clip = validate_clip_id(args.clip[i] if args.clip else Path(args.video[i]).stem, source="--clip")
        jobs.append(
            FaceJob(
                video=args.video[i], clip=clip, out=args.out[i], crops=(args.crops[i] or None) if args.crops else None
            )
        )
    outs = [j.out for j in jobs]
    if len(set(outs)) != len(outs):
        twice = sorted({o for o in outs if outs.count(o) > 1})
        raise ConfigError(f"two clips of the shard write the same --out: {twice}")
    return jobs


def run(args: argparse.Namespace) -> int:
    import torch

    from emofusion.config import load_config
    from emofusion.faces.stage import FaceJob, FaceSettings, extract_face_shard
    from emofusion.provenance import provenance

    cfg = load_config(args.config, overrides=args.config_json)
    settings = FaceSettings.from_config(cfg["faces"])
    jobs = parse_jobs(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    def prov(job: FaceJob) -> dict:
        return provenance(
            config={"faces": cfg["faces"]},
            source="cropped_aligned" if job.crops else "mtcnn",
            video=job.video,
            crops=job.crops,
        )

    extract_face_shard(jobs, settings=settings, threads=max(1, args.threads), provenance=prov)
    return 0
