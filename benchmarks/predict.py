"""Seconds of compute per minute of video for `emofusion predict`, cold and warm, next to the stages' own times.

    .venv/bin/python benchmarks/predict.py --run results/fusion/rjca/fold0/seed0 \\
        --second-run results/fusion/early_fusion/fold0/seed0        # after the demo run (`snakemake`)
    .venv/bin/python benchmarks/predict.py ... --device cuda         # the same rows on a GPU
    .venv/bin/python benchmarks/predict.py ... --seconds 10          # a shorter video

The video: a demo video (one real face, speech) looped and scaled to 720p (1280x720, H.264, AAC), ``--seconds``
long (default 30). Rows, each in seconds of wall time per minute of video:

- cold: nothing cached; faces, audio (and transcript for a text model), every embedding, then the model;
- stages: the sum of the stages' own times inside that cold run (what the workflow's jobs would spend on the
  same work, start-up excluded), and the model alone;
- warm, same model: every stage from the cache;
- warm, second model: a second run on the same backbones (``--second-run``): only the model runs.
Loading the model and its backbones (once per `emofusion predict` command) is reported apart.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO / "resources/demo/videos/batch2/demo10-30-320x180.mp4"


def make_video(src: Path, out: Path, seconds: float) -> None:
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is not installed (scripts/setup.sh installs it)")
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-stream_loop",
            "-1",
            "-i",
            str(src),
            "-t",
            str(seconds),
            "-vf",
            "scale=1280:720",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(out),
        ],
        check=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="results/fusion/rjca/fold0/seed0", help="a trained and evaluated run")
    ap.add_argument(
        "--second-run",
        default="results/fusion/early_fusion/fold0/seed0",
        help="another run on the same backbones (warm, second model); '' to skip",
    )
    ap.add_argument("--video", default=str(DEFAULT_VIDEO), help="source video (looped and scaled to 720p)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the 720p video")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    import torch

    from emofusion.log import setup_logging
    from emofusion.predict.bundle import load_run
    from emofusion.predict.outputs import write_outputs
    from emofusion.predict.predictor import Predictor

    setup_logging(False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "video720p.mp4"
        make_video(Path(args.video), video, args.seconds)
        from emofusion.video import timeline

        tl = timeline(video)
        minutes = tl.frames / tl.fps / 60
        rows = []

        def timed(label: str, run: str, cache: Path):
            t0 = time.perf_counter()
            model = load_run(run)
            predictor = Predictor(model, device=args.device, threads=args.threads)
            load = time.perf_counter() - t0
            t1 = time.perf_counter()
            pred = predictor.predict(video, cache=cache)
            write_outputs(pred, model, tmp / label.replace(" ", "_"), side=None)
            total = time.perf_counter() - t1
            rows.append((label, model.name, load, total, pred.cache["seconds"]))
            return pred

        cache = tmp / "cache"
        cold = timed("cold", args.run, cache)
        timed("warm, same model", args.run, cache)
        if args.second_run:
            timed("warm, second model", args.second_run, cache)

    print(
        f"# predict: {tl.frames} frames of 1280x720 at {tl.fps:.1f} fps ({minutes * 60:.1f} s), device "
        f"{args.device}, torch threads {torch.get_num_threads()}, {platform.machine()}, torch {torch.__version__}"
    )
    print("| row | model | load (s) | s per minute of video | stages' own time, s/min | model, s/min |")
    print("|---|---|--:|--:|--:|--:|")
    for label, name, load, total, seconds in rows:
        stages = sum(v for k, v in seconds.items() if k != "model")
        print(
            f"| {label} | {name} | {load:.1f} | {total / minutes:.1f} | {stages / minutes:.1f} | "
            f"{seconds.get('model', 0.0) / minutes:.2f} |"
        )
    print(
        "stage times of the cold run (s per minute of video): "
        + json.dumps({k: round(v / minutes, 2) for k, v in cold.cache["seconds"].items()})
    )


if __name__ == "__main__":
    main()
