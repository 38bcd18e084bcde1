"""emofusion audio: a video's audio track as mono PCM on the video's frame timeline."""

from __future__ import annotations

import argparse

from emofusion.commands._common import add_config_arguments

NAME = "audio"
ORDER = 40
HELP = "extract a video's audio as mono 16 kHz WAV aligned to its first frame (results/audio/VIDEO.wav + .json)"
DESCRIPTION = """\
Decode the audio track of --video (or of --audio, a separate file of the same recording) frame by frame,
resample it to audio.sample_rate, average the channels and write a mono 16-bit WAV to --out, plus a JSON sidecar
beside it (same name, .json) with the alignment and provenance. Each frame goes where its timestamp puts it: a gap
in the stream becomes zeros, overlapping audio is dropped (counted as gaps / overlaps in the sidecar).

Sample 0 is the video's first frame: when the audio stream starts later than the video stream the start is padded
with zeros, when it starts earlier it is trimmed, and the offset is recorded (offset_seconds, offset_samples). The
WAV spans exactly the video's duration; [valid_start_sample, valid_end_sample) holds decoded audio. A video without
an audio stream is an error unless audio.missing_audio is silence (zeros, has_audio: false). Each file is
written under a temporary name and renamed into place only after the whole track is decoded, the WAV first, then
the JSON: a failure leaves no partial file and a previous output at --out as it was (only a failure between the
two renames would pair the new WAV with the old JSON).

Several videos in one process (the workflow's audio shard jobs, clips_per_audio_job): repeat --video, --out and
(for all or none) --audio, in the same order; each output is the one the command for that video alone writes."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--video", action="append", required=True, help="the video whose frame timeline the audio follows")
    p.add_argument("--audio", action="append", help="file holding the audio track, when it is not the video itself")
    p.add_argument(
        "--out",
        action="append",
        required=True,
        help="output WAV (e.g. results/audio/VIDEO.wav); VIDEO.json is written beside it. Repeat with --video",
    )


def run(args: argparse.Namespace) -> int:
    from emofusion.audio.stage import extract_audio
    from emofusion.config import load_config
    from emofusion.errors import InputError
    from emofusion.provenance import provenance

    cfg = load_config(args.config, overrides=args.config_json)
    section = cfg["audio"]
    audios = args.audio or [None] * len(args.out)
    for option, given in (("--video", args.video), ("--audio", audios)):
        if len(given) != len(args.out):
            raise InputError(
                f"{option} given {len(given)} times for {len(args.out)} --out; give it once with each --out"
            )
    for video, audio, out in zip(args.video, audios, args.out, strict=True):
        extract_audio(
            video,
            out,
            audio=audio,
            sample_rate=section["sample_rate"],
            missing_audio=section["missing_audio"],
            metadata=provenance(config={"audio": section}),
        )
    return 0
