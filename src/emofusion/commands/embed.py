"""emofusion embed: one backbone's features for one clip (visual) or one video (audio, text), into a shard; or,
with --out repeated, for several, one shard each, loading the backbone once (the workflow's embed shard jobs)."""

from __future__ import annotations

import argparse
from typing import cast

from emofusion.commands._common import add_config_arguments
from emofusion.layout import MODALITIES

NAME = "embed"
ORDER = 60
HELP = "embed a clip's faces, or a video's audio or transcript, with one backbone into a feature shard"
DESCRIPTION = """\
Run one registered backbone (features.<modality>.backbones.<name> gives its options) and write a shard in the
feature-store layout (results/features/<modality>/<backbone>/<clip or video>.h5): a group per clip with
features (N, D) float32 and valid (N,) bool, one row per video frame, and root attributes schema_version,
modality, backbone, width, native_rate, timeline, weights_sha256, weights_source, licence, provenance.

  visual: --faces results/faces/<clip>.h5 [more ...] --video <its video> [more ...]. Crops are read in batches
          of features.batch_size frames (the next batch read while the device computes); only valid faces are
          embedded, other rows are zeros and invalid; a store without any face gives all-invalid rows and a
          warning. float16 autocast on CUDA for backbones that tolerate it (features.amp).
  audio:  --audio results/audio/<video>.wav --clips <the video's clips>. Row i describes the window ending at
          frame i's presentation time (read from the video the sidecar names: a variable frame rate keeps its
          real times); rows outside the sidecar's decoded span are invalid. Clips of one video share its rows.
  text:   --transcript results/transcripts/<video>.parquet --audio results/audio/<video>.wav --clips ...
          One row per word, put on the frames during which it is spoken; frames without a word are invalid.

NaN or inf from a backbone fails the job naming the clip and backbone; nothing is written. Nothing is
downloaded: a backbone whose weights are not installed or not at their configured path fails naming the
config key to set. `emofusion embed-merge` then gathers the shards into the store training reads.

Several shards in one process (the backbone and the imports paid once): repeat --out, and with each --out its
own --faces [--video] (visual) or --audio [--transcript] [--clips] (audio, text), in the same order; each shard
is written as the same command with only that --out would write it."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--modality", required=True, choices=MODALITIES)
    p.add_argument("--backbone", required=True, help="registered backbone name (e.g. fer, egemaps, minilm)")
    p.add_argument(
        "--faces", nargs="+", action="append", metavar="H5", help="visual: face store(s), one clip each (per --out)"
    )
    p.add_argument(
        "--video",
        nargs="+",
        action="append",
        metavar="VIDEO",
        help="visual: each face store's video, for its frame rate (default: the path the store records)",
    )
    p.add_argument(
        "--audio",
        action="append",
        metavar="WAV",
        help="audio, text: the audio-stage WAV (its sidecar gives the timeline); one per --out",
    )
    p.add_argument(
        "--transcript", action="append", metavar="PARQUET", help="text: the video's transcript; one per --out"
    )
    p.add_argument(
        "--clips",
        nargs="+",
        action="append",
        metavar="CLIP",
        help="audio, text: the clips of this video (default: the WAV's stem); one list per --out",
    )
    p.add_argument(
        "--out",
        action="append",
        required=True,
        help="output shard (e.g. results/features/visual/fer/<clip>.h5); repeat for several shards in one process",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default 0: torch's default)")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    # Nothing is fetched at run time: a Hugging Face model that is not on disk fails instead of downloading.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import torch

    from emofusion.config import load_config
    from emofusion.device import resolve_device
    from emofusion.features import stage
    from emofusion.features.stage import (
        AudioBackbone,
        TextBackbone,
        VisualBackbone,
        backbone_config,
        backbone_options,
        build_backbone,
    )
    from emofusion.log import logger
    from emofusion.provenance import provenance

    cfg = load_config(args.config, overrides=args.config_json)
    units = _units(args)  # before the backbone loads: a wrong command line fails at once
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    section = cfg["features"]
    options = backbone_options(section, args.modality, args.backbone)
    device = resolve_device(section["device"], key="features.device", tf32=section["tf32"])
    backbone = build_backbone(args.modality, args.backbone, options, device=device)
    for unit in units:
        rows: list[stage.ClipRows] = []
        if args.modality == "visual":
            for faces, video in zip(unit["faces"], unit["videos"] or [None] * len(unit["faces"]), strict=True):
                clip, fps = _clip_and_fps(Path(faces), video)
                feats, valid = stage.embed_faces(
                    cast(VisualBackbone, backbone),
                    faces,
                    batch_size=section["batch_size"],
                    amp=section["amp"],
                    clip=clip,
                )
                rows.append(stage.ClipRows(clip, feats, valid, fps))
            inputs = {"faces": unit["faces"], "videos": unit["videos"]}
        else:
            if args.modality == "audio":
                feats, valid, fps = stage.embed_audio(cast(AudioBackbone, backbone), unit["audio"])
            else:
                feats, valid, fps = stage.embed_transcript(
                    cast(TextBackbone, backbone), unit["transcript"], unit["audio"]
                )
            clips = unit["clips"] or [Path(unit["audio"]).stem]
            rows = [stage.ClipRows(c, feats, valid, fps) for c in clips]  # the clips of a video share its rows
            inputs = {"audio": unit["audio"], "transcript": unit["transcript"], "clips": clips}
        prov = provenance(
            config=backbone_config(cfg["features"], args.modality, args.backbone),
            modality=args.modality,
            backbone=args.backbone,
            device=str(device),
            **inputs,
        )
        stage.write_shard(unit["out"], rows, backbone, prov)
        for r in rows:
            logger.info(
                "%s %s/%s: %d frames, %d valid, width %d",
                r.clip,
                args.modality,
                args.backbone,
                len(r.valid),
                int(r.valid.sum()),
                backbone.width,
            )
    return 0


def _units(args: argparse.Namespace) -> list[dict]:
    """Each shard to write: its --out and the inputs given with it, checked before any backbone runs. With one
    --out every option belongs to it (repeated --faces/--video/--clips add up, as before shards)."""
    from emofusion.errors import InputError

    n = len(args.out)

    def per_out(option: str, values: list | None, required: str | None = None) -> list:
        if values is None:
            if required:
                raise InputError(f"embed --modality {args.modality} needs {option} {required}")
            return [None] * n
        if n == 1 and isinstance(values[0], list):
            return [[v for group in values for v in group]]
        if len(values) != n:
            raise InputError(f"{option} given {len(values)} times for {n} --out; give it once with each --out")
        return values

    if args.modality == "visual":
        faces = per_out("--faces", args.faces, "results/faces/<clip>.h5")
        videos = per_out("--video", args.video)
        for f, v in zip(faces, videos, strict=True):
            if v is not None and len(v) != len(f):
                raise InputError(f"--video: {len(v)} videos for {len(f)} face stores; give one each")
        return [{"out": o, "faces": f, "videos": v} for o, f, v in zip(args.out, faces, videos, strict=True)]
    audio = per_out("--audio", args.audio, "results/audio/<video>.wav")
    required = "results/transcripts/<video>.parquet" if args.modality == "text" else None
    transcripts = per_out("--transcript", args.transcript, required)
    clips = per_out("--clips", args.clips)
    return [
        {"out": o, "audio": a, "transcript": t, "clips": c}
        for o, a, t, c in zip(args.out, audio, transcripts, clips, strict=True)
    ]


def _clip_and_fps(faces, video) -> tuple[str, float]:
    """The face store's clip id and its video's frame rate (the frame counts must agree)."""
    from pathlib import Path

    from emofusion.errors import InputError
    from emofusion.faces.stage import FaceStore
    from emofusion.video import timeline

    with FaceStore(faces) as store:
        attrs = store.attrs
        frames = store.frames
    clip = str(attrs.get("clip", faces.stem))
    recorded = attrs.get("video")
    video = Path(video if video is not None else str(recorded or ""))
    if not video.is_file():
        raise InputError(f"{faces}: its video {video} does not exist; pass --video with the clip's video")
    tl = timeline(video)
    if tl.frames != frames:
        raise InputError(f"{faces} has {frames} frames but its video {video} has {tl.frames}; rerun the face stage")
    return clip, tl.fps
