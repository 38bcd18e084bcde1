"""emofusion transcribe: Whisper words with timestamps for one video's audio, offline."""

from __future__ import annotations

import argparse

from emofusion.commands._common import add_config_arguments

NAME = "transcribe"
ORDER = 50
HELP = "transcribe a video's audio with Whisper word timestamps into results/transcripts/VIDEO.parquet"
DESCRIPTION = """\
Read an audio-stage output (--audio results/audio/VIDEO.wav and its .json sidecar) and transcribe it with the
engine of asr.engine (faster-whisper, batched; or openai-whisper) and the model of asr.model (default
tiny.en-bundled, which ships offline), temperature 0, word timestamps on. Any other audio file (no sidecar
beside it: a recording of your own, any rate or format FFmpeg reads) is decoded and resampled to 16 kHz as the
audio stage does and transcribed whole, times counted from its first sample.

Output: one Parquet table, one row per segment or word (column kind), with text, start and end in seconds on
the frame timeline (0 = the video's first frame), probability, and segment statistics; the model (name,
engine, path, sha256), the audio and the config are in its metadata. Speech without words and videos without
audio give an empty table with the same columns. Nothing is downloaded: a model that is not on disk is an error
naming asr.model.

Several files in one process (the workflow's transcribe shard jobs, clips_per_audio_job): repeat --audio and --out,
in the same order; the model is loaded once (when the first file with audio needs it), and each transcript is the
one the command for that file alone writes."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument(
        "--audio",
        action="append",
        required=True,
        help="audio-stage WAV (e.g. results/audio/VIDEO.wav) or any audio file; repeat with --out",
    )
    p.add_argument(
        "--out", action="append", required=True, help="output Parquet (e.g. results/transcripts/VIDEO.parquet)"
    )
    p.add_argument(
        "--whisper-checkpoint",
        metavar="PT",
        help="converted openai-whisper checkpoint of a CTranslate2 asr.model (the workflow passes "
        "results/asr/whisper-tiny.en.pt); without it, openai-whisper converts in memory",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the engine (default: all)")


def run(args: argparse.Namespace) -> int:
    from emofusion.asr.stage import AsrOptions, load_engine, transcribe_file
    from emofusion.config import load_config
    from emofusion.errors import InputError

    cfg = load_config(args.config, overrides=args.config_json)
    if len(args.audio) != len(args.out):
        raise InputError(
            f"--audio given {len(args.audio)} times for {len(args.out)} --out; give it once with each --out"
        )
    if len(args.out) == 1:
        transcribe_file(
            args.audio[0], args.out[0], cfg["asr"], checkpoint=args.whisper_checkpoint, threads=args.threads
        )
        return 0

    options = AsrOptions.from_config(cfg["asr"])
    engine = _LazyEngine(lambda: load_engine(options, threads=args.threads, checkpoint=args.whisper_checkpoint))
    for audio, out in zip(args.audio, args.out, strict=True):
        transcribe_file(audio, out, cfg["asr"], checkpoint=args.whisper_checkpoint, threads=args.threads, engine=engine)
    return 0


class _LazyEngine:
    """The model of a shard, loaded when a file with audio first asks for it (a shard of silent videos loads none,
    as one command per video would not), then shared by the shard's files."""

    def __init__(self, load):
        self._load = load
        self._engine = None

    def __getattr__(self, name):
        if self._engine is None:
            self._engine = self._load()
        return getattr(self._engine, name)
