"""ABAW submission writer and validator at Aff-Wild2 test-set scale (about a million frames).

Prints the seconds to build, write and check one submission (plain, and following a sample file that pads and
truncates), and the same write and parse done the plain pandas way (``to_csv(float_format=...)`` and
``str.extract``) as the baseline. Synthetic predictions: the clip count and lengths are what matter here.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from emofusion.report.submission import (
    LOCATION,
    build_submission,
    check_submission,
    read_sample,
    write_submission,
)


def timed(label: str, fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    print(f"| {label} | {time.perf_counter() - t:.2f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=152, help="test clips (the ABAW VA test set has about 150)")
    ap.add_argument("--mean-frames", type=int, default=7100, help="mean frames per clip (about 1.08 M in all)")
    ap.add_argument("--quick", action="store_true", help="a tenth of the frames")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    mean = args.mean_frames // (10 if args.quick else 1)
    frames = {
        f"{i:03d}-{rng.integers(10, 99)}-1280x720": int(rng.integers(mean // 4, 7 * mean // 4))
        for i in range(args.clips)
    }
    n = sum(frames.values())
    clip = np.repeat(np.array(list(frames), dtype=object), list(frames.values()))
    preds = pd.DataFrame(
        {
            "clip": clip,
            "frame": np.concatenate([np.arange(v) for v in frames.values()]),
            "valence": rng.uniform(-1, 1, n).astype(np.float32),
            "arousal": rng.uniform(-1, 1, n).astype(np.float32),
        }
    )
    preds = preds.sample(frac=1.0, random_state=0)  # evaluate writes clips in its own order
    cols = ["valence", "arousal"]
    print(f"{len(frames)} test clips, {n} frames\n")
    print("| step | seconds |\n|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub.csv"
        rows = timed("build (every frame 1..N)", build_submission, preds, frames, run="bench", variant_columns=cols)
        timed("write", write_submission, path, rows)
        verdict = timed("check", check_submission, path, frames)
        assert verdict["ok"], verdict["errors"]
        # A sample file listing each clip with 5 frames more or fewer than we have (pad / truncate).
        sample_path = Path(tmp) / "sample.csv"
        extra = {c: max(1, v + int(rng.choice([-5, 5]))) for c, v in frames.items()}
        with open(sample_path, "w") as f:
            f.write("image_location,valence,arousal\n")
            f.writelines(f"{c}/{i:05d}.jpg,0,0\n" for c, v in extra.items() for i in range(1, v + 1))
        sample = timed("read sample file", read_sample, sample_path)
        rows = timed(
            "build (sample rows)", build_submission, preds, frames, run="bench", variant_columns=cols, sample=sample
        )
        timed("write", write_submission, path, rows)
        verdict = timed("check against the sample", check_submission, path, frames, sample=sample)
        assert verdict["ok"], verdict["errors"]
        base = Path(tmp) / "pandas.csv"
        timed("baseline: pandas to_csv(float_format='%.6f')", rows.to_csv, base, index=False, float_format="%.6f")
        table = pd.read_csv(base, dtype=str, keep_default_na=False)
        timed(
            "baseline: pandas str.extract of image_location",
            table["image_location"].str.extract,
            f"^{LOCATION.pattern}$",
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
