"""What a job pays before its first frame: the command line and the stages that need no torch import none of it.

Every per-clip job is its own process (issue 23: on Aff-Wild2 about 2,900 of them), so a package imported where it
is not needed is paid thousands of times: `import torch` alone is 1.7 s on an idle 2-core machine, pandas 0.3 s.
Each check runs in a fresh interpreter, where sys.modules shows what the code imported."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "torchcodec", "torchvision", "transformers", "whisper", "opensmile", "h5py", "pandas", "numpy")


def imported_after(code: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    check = f"{code}\nimport sys\nprint(sorted(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout
    return eval(out.strip().splitlines()[-1])


def test_the_command_line_and_every_help_import_nothing_heavy():
    """`emofusion --help`, `emofusion COMMAND --help` and parsing a stage's arguments: argparse only."""
    code = """
import contextlib, io
from emofusion.cli import build_parser
parser = build_parser()
commands = sorted(parser._subparsers._group_actions[0].choices)
assert {"faces", "audio", "transcribe", "embed"} <= set(commands), commands
for argv in (["--help"], *([c, "--help"] for c in commands)):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        parser.parse_args(argv)
parser.parse_args(["audio", "--video", "v.mp4", "--out", "a.wav"])
"""
    assert imported_after(code) == []


def test_a_face_job_checks_its_clip_id_without_pandas():
    """`emofusion faces` validates each clip id with corpus.validate_clip_id before loading MTCNN: pandas (only
    for tables: the manifest, a clip list) stays out of the job."""
    code = """
from emofusion.corpus import discover, side_of, validate_clip_id
assert validate_clip_id("v1_left", source="x") == "v1_left" and side_of("v1_left") == "left"
"""
    assert imported_after(code, ("pandas", "torch")) == []


def test_reading_audio_and_transcribing_need_no_torch():
    """The audio stage decodes with PyAV (its torch comes only from the video timeline, see docs/benchmarks.md),
    reading a WAV back is numpy and soundfile, and transcription runs faster-whisper (CTranslate2): none of them
    imports torch."""
    code = "import emofusion.audio.read, emofusion.audio.decode, emofusion.asr.stage, emofusion.commands.transcribe"
    assert imported_after(code, ("torch", "torchcodec", "transformers")) == []
