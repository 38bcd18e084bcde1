"""Speed and peak memory of the face stage, against MTCNN called frame by frame.

    .venv/bin/python benchmarks/faces.py                         # CPU: the shared videos, a looped video 1x / 8x
    .venv/bin/python benchmarks/faces.py --device cuda --batch-size 64
    .venv/bin/python benchmarks/faces.py --quick                 # one short video, a few frames, 1x / 2x
    .venv/bin/python benchmarks/faces.py --detect-every 3        # P-net on every 3rd frame (faces.detect_every)

The tables:

1. End to end: ``emofusion.faces.stage.extract_faces`` on every video (decode as a stream, batched MTCNN, subject
   tracking, batched alignment, HDF5 store), each in its own process so its peak memory is its own. Frames per
   second over the whole run (model loading excluded); peak resident memory (CPU) above the process's size once
   torch and the models are loaded, and ``torch.cuda.max_memory_allocated`` on CUDA.
2. Same frames: the first ``--baseline-frames`` frames of each video, decoded beforehand, through (a) the batched
   aligner and (b) facenet-pytorch's ``MTCNN`` called once per PIL frame as its README shows (``mtcnn(img)``), same
   min_face_size and thresholds; the ratio is (a) / (b). Decoding is excluded from both.
3. Memory against length: one video and the same video looped ``--loop`` times (``ffmpeg -stream_loop``): the peak
   must not grow with the number of frames (it is bounded by the batch). The only table that needs an ``ffmpeg``
   binary: without one it is skipped with a note (a bare GPU node has none).
4. (``--tables 4``) Overlap: per video, decoding alone, the aligner alone on frames decoded beforehand, and the
   stage end to end with its steps one after another and overlapped (models loaded once, beforehand).
5. (``--tables 5``) Shards: the videos through ``emofusion faces`` as the workflow runs it, once as one process
   per clip (``clips_per_face_job: 1``) and once as one process for all of them (a shard): wall seconds of each,
   start-up per job = (per-clip total - shard) / (clips - 1), the import, CUDA and model loading a shard pays once.
6. (``--tables 6``) Resolution: ``--resolution-seconds`` of ``--loop-video`` re-encoded at 640x360, 1280x720 and
   1920x1080 (ffmpeg, the same content), each end to end in its own process, the best of ``--repeat``: the cost
   should follow the detection size (``max_side``), not the source's; ratio = seconds / the 360p copy's (cpu
   ratio: the same for the process's CPU seconds, less sensitive to a shared machine's load); moved = the median
   shift of the face box's centre from the 360p copy's, in 360p pixels (the JSON has the largest); crops = the
   mean absolute difference of the crops from the 360p copy's, grey levels; load = the 1-minute load average as
   the best run started. The sizes take turns, ``--repeat`` rounds, so a change of load falls on all alike.

A run that fails (a video, or facenet-pytorch missing for table 2) is skipped with a note and the others go on;
the exit status is 1 when anything was skipped that way. ``--json PATH`` writes every table's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(os.environ.get("EMOFUSION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import write_figures  # noqa: E402  (benchmarks/ is not a package)

DEFAULT_VIDEOS = [
    "pyfeat_videos/single_face.mp4",
    "pyfeat_videos/WolfgangLanger_Pexels.mp4",
    "pyfeat_videos/face_noface.mov",
    "pyfeat_videos/noface_face.mov",
    "pyfeat_videos/no_face.mp4",
    "street_faces/video.mp4",
]


def rss_mb() -> float:
    """Peak resident set size of this process image, MB: VmHWM (ru_maxrss would also count the parent's size at
    fork time, which Linux carries across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def settings_from(args):
    from emofusion.faces.config import FaceSettings

    return FaceSettings.from_config(
        dict(
            batch_size=args.batch_size,
            device=args.device,
            min_face_size=args.min_face_size,
            max_side=args.max_side or None,
            detect_every=args.detect_every,
        )
    )


def child(args) -> None:
    """One end-to-end run in this process; prints one JSON line."""
    import torch

    from emofusion.device import resolve_device
    from emofusion.faces.stage import FaceAligner, extract_faces

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from(args)
    device = resolve_device(settings.device)
    # Load the models once before measuring, so the baseline includes them (extract_faces loads its own copy,
    # a few MB).
    FaceAligner(settings, width=640, height=360, side=None, device=device)
    base = current_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        summary = extract_faces(
            args.child, Path(tmp) / "store.h5", clip=Path(args.child).stem, settings=settings, threads=args.threads or 1
        )
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        size_mb = (Path(tmp) / "store.h5").stat().st_size / 2**20
        if args.keep:
            shutil.copy(Path(tmp) / "store.h5", args.keep)
    out = {
        "frames": summary.frames,
        "valid": summary.valid,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # every thread of the process (decoding, detection, writing)
        "load_1min": load,  # the machine's load average as the run started
        "fps": summary.frames / seconds,
        "base_mb": base,
        "peak_mb": rss_mb(),
        "store_mb": size_mb,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }
    print("RESULT " + json.dumps(out), flush=True)


def run_child(video: Path, args, *, keep: Path | None = None) -> dict | None:
    """One end-to-end run in its own process (its face store copied to ``keep``); None (with a note) when it
    failed."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(video),
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--min-face-size",
        str(args.min_face_size),
        "--max-side",
        str(args.max_side),
        "--threads",
        str(args.threads),
        "--detect-every",
        str(args.detect_every),
        *(["--keep", str(keep)] if keep else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        skip(
            args,
            f"{video.name}: the run failed ({(proc.stderr.strip().splitlines() or ['no output'])[-1]})",
            failed=True,
        )
        print(proc.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(line[len("RESULT ") :])


def skip(args, note: str, *, failed: bool = False) -> None:
    """Print a skipped row or table with why; ``failed`` (not a missing optional tool) sets the exit status."""
    print(f"skipped: {note}", flush=True)
    args.skipped.append({"note": note, "failed": failed})


def decode_first(video: Path, n: int):
    """The first ``n`` frames (all when 0) through the stage's own stream, so both sides see the same pixels."""
    import torch

    from emofusion.video import VideoStream

    stream = VideoStream(video, batch_size=max(1, n) if n > 0 else 64)
    batches = []
    for batch in stream:
        batches.append(batch.frames)
        if n > 0:
            break
    return torch.cat(batches)  # (n, 3, H, W) uint8


def same_frames(video: Path, args) -> dict:
    """Batched aligner vs facenet-pytorch frame by frame on the same decoded frames."""
    import torch
    from facenet_pytorch import MTCNN
    from PIL import Image

    from emofusion.device import resolve_device
    from emofusion.faces.stage import FaceAligner

    settings = settings_from(args)
    device = resolve_device(settings.device)
    frames = decode_first(video, args.baseline_frames)
    n, _, h, w = frames.shape
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    aligner = FaceAligner(settings, width=w, height=h, side=None, device=device)
    aligner(frames[:2])  # warm-up (first-call allocations, cuDNN autotuning)
    aligner = FaceAligner(settings, width=w, height=h, side=None, device=device)
    sync()
    start, cpu = time.perf_counter(), time.process_time()
    found_batched = 0
    for i in range(0, n, settings.batch_size):
        found_batched += int(aligner(frames[i : i + settings.batch_size])["valid"].sum())
    sync()
    batched, batched_cpu = time.perf_counter() - start, time.process_time() - cpu

    images = [Image.fromarray(f) for f in frames.permute(0, 2, 3, 1).numpy()]
    mtcnn = MTCNN(
        image_size=settings.size,
        min_face_size=settings.min_face_size,
        thresholds=list(settings.thresholds),
        factor=settings.pyramid_factor,
        device=device,
    )
    mtcnn(images[0])
    sync()
    start, cpu = time.perf_counter(), time.process_time()
    found_ref = sum(mtcnn(img) is not None for img in images)
    sync()
    per_frame, per_frame_cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "frames": n,
        "size": f"{w}x{h}",
        "batched_fps": n / batched,
        "per_frame_fps": n / per_frame,
        "ratio": per_frame / batched,
        "cpu_ratio": per_frame_cpu / batched_cpu,
        "found_batched": found_batched,
        "found_ref": found_ref,
    }


def looped(video: Path, times: int, folder: Path) -> Path:
    out = folder / f"{video.stem}_x{times}{video.suffix}"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-stream_loop",
            str(times - 1),
            "-i",
            str(video),
            "-map",
            "0:v",
            "-c",
            "copy",
            str(out),
        ],
        check=True,
    )
    return out


def table_end_to_end(videos: list[Path], args) -> list[dict]:
    print("\n## 1. End to end (decode + detect + track + align + write), one process per video")
    print(f"{'video':32s} {'frames':>7s} {'valid':>6s} {'fps':>8s} {'peak MB':>8s} {'+MB':>6s} {'cuda MB':>8s}")
    rows = []
    for v in videos:
        r = run_child(v, args)
        if r is None:
            continue
        rows.append({"video": v.name, **r})
        cuda = f"{r['cuda_peak_mb']:.0f}" if r["cuda_peak_mb"] is not None else "-"
        print(
            f"{v.name:32s} {r['frames']:7d} {r['valid']:6d} {r['fps']:8.1f} {r['peak_mb']:8.0f} "
            f"{r['peak_mb'] - r['base_mb']:6.0f} {cuda:>8s}",
            flush=True,
        )
    return rows


def table_same_frames(videos: list[Path], args) -> list[dict]:
    import importlib.util

    import torch

    if importlib.util.find_spec("facenet_pytorch") is None:
        skip(args, "table 2: facenet-pytorch (its per-frame MTCNN is the baseline) is not installed")
        return []
    print(
        f"\n## 2. Same frames (first {args.baseline_frames or 'all'}): batched vs facenet-pytorch mtcnn(img) per frame"
    )
    print("(ratio: wall time; cpu: process CPU time, less sensitive to other load on the machine)")
    print(
        f"{'video':32s} {'size':>10s} {'frames':>7s} {'batched fps':>12s} {'per-frame fps':>14s} {'ratio':>7s} "
        f"{'cpu':>6s} {'faces b/ref':>12s}"
    )
    ratios, cpu_ratios, rows = [], [], []
    for v in videos:
        r = same_frames(v, args)
        rows.append({"video": v.name, **r})
        ratios.append(r["ratio"])
        cpu_ratios.append(r["cpu_ratio"])
        print(
            f"{v.name:32s} {r['size']:>10s} {r['frames']:7d} {r['batched_fps']:12.2f} {r['per_frame_fps']:14.2f} "
            f"{r['ratio']:6.1f}x {r['cpu_ratio']:5.1f}x {r['found_batched']:5d}/{r['found_ref']:<5d}",
            flush=True,
        )
    geo = float(torch.tensor(ratios).log().mean().exp())
    geo_cpu = float(torch.tensor(cpu_ratios).log().mean().exp())
    print(f"{'geometric mean':32s} {'':>10s} {'':>7s} {'':>12s} {'':>14s} {geo:6.1f}x {geo_cpu:5.1f}x")
    return rows


def table_length(args) -> list[dict]:
    if shutil.which("ffmpeg") is None:
        skip(args, "table 3: no ffmpeg binary on PATH to loop the video (the other tables do not need one)")
        return []
    rows = []
    print(f"\n## 3. Peak memory against video length ({args.loop_video.name} looped)")
    print(f"{'length':>8s} {'frames':>7s} {'fps':>8s} {'peak MB':>8s} {'+MB':>6s} {'cuda MB':>8s} {'store MB':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        for times in (1, args.loop):
            v = args.loop_video if times == 1 else looped(args.loop_video, times, Path(tmp))
            r = run_child(v, args)
            if r is None:
                continue
            rows.append({"times": times, **r})
            cuda = f"{r['cuda_peak_mb']:.0f}" if r["cuda_peak_mb"] is not None else "-"
            grown = r["peak_mb"] - r["base_mb"]
            print(
                f"{times:7d}x {r['frames']:7d} {r['fps']:8.1f} {r['peak_mb']:8.0f} {grown:6.0f} {cuda:>8s} "
                f"{r['store_mb']:9.1f}",
                flush=True,
            )
    return rows


RESOLUTIONS = ((640, 360), (1280, 720), (1920, 1080))


def table_resolution(args) -> list[dict]:
    if shutil.which("ffmpeg") is None:
        skip(args, "table 6: no ffmpeg binary on PATH to re-encode the video (the other tables do not need one)")
        return []
    import h5py
    import numpy as np

    print(f"\n## 6. One content at three resolutions ({args.loop_video.name}, {args.resolution_seconds} s)")
    header = (("size", 10), ("frames", 7), ("valid", 6), ("seconds", 8), ("cpu s", 7), ("fps", 7), ("ratio", 6))
    header += (("cpu ratio", 9), ("peak MB", 8), ("moved", 7), ("crops", 6), ("load", 5))
    print(" ".join(f"{name:>{width}s}" for name, width in header))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        for w, h in RESOLUTIONS:
            videos[w, h] = Path(tmp) / f"{w}x{h}.mp4"
            subprocess.run(
                [
                    *("ffmpeg", "-v", "error", "-y", "-i", str(args.loop_video), "-t", str(args.resolution_seconds)),
                    *("-vf", f"scale={w}:{h}", "-c:v", "libx264", "-crf", "18", "-an", str(videos[w, h])),
                ],
                check=True,
            )
        # Rounds over the three sizes (not one size's repeats in a row), so a change of the machine's load falls
        # on every size alike; the best round of each is reported.
        runs: dict[tuple[int, int], list[dict]] = {size: [] for size in RESOLUTIONS}
        for _ in range(max(1, args.repeat)):
            for w, h in RESOLUTIONS:
                done = run_child(videos[w, h], args, keep=Path(tmp) / f"{w}.h5")
                if done is not None:
                    runs[w, h].append(done)
        base = None
        for w, h in RESOLUTIONS:
            if not runs[w, h]:
                continue
            best = min(runs[w, h], key=lambda r: r["seconds"])
            with h5py.File(Path(tmp) / f"{w}.h5", "r") as f:
                valid = np.asarray(f["valid"][:], bool)
                centres = (np.asarray(f["boxes"][:])[:, :2] + np.asarray(f["boxes"][:])[:, 2:]) / 2 * (640 / w)
                crops = np.asarray(f["crops"][:], np.int16)
            if base is None:
                base = {**best, "valid": valid, "centres": centres, "crops": crops}
            both = valid & base["valid"]
            moved = np.abs(centres[both] - base["centres"][both]).max(axis=1) if both.any() else np.zeros(1)
            shift, worst = float(np.median(moved)), float(moved.max())
            crop_diff = float(np.abs(crops[both] - base["crops"][both]).mean()) if both.any() else 0.0
            row = {
                "size": f"{w}x{h}",
                **best,
                "ratio": best["seconds"] / base["seconds"],
                "cpu_ratio": min(r["cpu_seconds"] for r in runs[w, h]) / min(r["cpu_seconds"] for r in runs[640, 360]),
                "valid_differs": int((valid != base["valid"]).sum()),
                "box_centre_median_px": shift,
                "box_centre_max_px": worst,
                "crop_mean_abs_diff": crop_diff,
            }
            rows.append(row)
            print(
                f"{row['size']:>10s} {best['frames']:7d} {best['valid']:6d} {best['seconds']:8.2f} "
                f"{best['cpu_seconds']:7.2f} {best['fps']:7.1f} {row['ratio']:6.2f} {row['cpu_ratio']:9.2f} "
                f"{best['peak_mb']:8.0f} {shift:7.2f} {crop_diff:6.2f} {best['load_1min']:5.1f}",
                flush=True,
            )
    return rows


def overlap_rates(video: Path, args) -> dict:
    """One video, in this process, models loaded beforehand: decoding alone, the aligner (detect + track + align)
    alone on the frames decoded beforehand, and the stage end to end, sequential and overlapped."""
    import torch

    from emofusion.device import resolve_device
    from emofusion.faces.stage import FaceAligner, extract_faces, make_detector
    from emofusion.video import VideoStream

    settings = settings_from(args)
    device = resolve_device(settings.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    detector = make_detector(settings, device)
    start = time.perf_counter()
    frames = torch.cat(
        [b.frames for b in VideoStream(video, batch_size=settings.batch_size, threads=args.threads or 1)]
    )
    decode = time.perf_counter() - start
    n, _, h, w = frames.shape
    FaceAligner(settings, width=w, height=h, side=None, device=device, detector=detector)(frames[:2])  # warm-up
    out = {
        "frames": n,
        "size": f"{w}x{h}",
        "decode_fps": n / decode,
        "alone_fps": 0.0,
        "sequential_fps": 0.0,
        "overlapped_fps": 0.0,
    }
    # Best of --repeat rounds, the three measured in turn in each: other load on the machine only slows a run.
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(max(1, args.repeat)):
            aligner = FaceAligner(settings, width=w, height=h, side=None, device=device, detector=detector)
            sync()
            start = time.perf_counter()
            for i in range(0, n, settings.batch_size):
                aligner(frames[i : i + settings.batch_size])
            sync()
            out["alone_fps"] = max(out["alone_fps"], n / (time.perf_counter() - start))
            for pipeline in ("sequential", "overlapped"):
                start = time.perf_counter()
                extract_faces(
                    video,
                    Path(tmp) / f"{pipeline}.h5",
                    clip=video.stem,
                    settings=settings,
                    threads=args.threads or 1,
                    detector=detector,
                    pipeline=pipeline,
                )
                out[f"{pipeline}_fps"] = max(out[f"{pipeline}_fps"], n / (time.perf_counter() - start))
    return out


def table_overlap(videos: list[Path], args) -> list[dict]:
    print("\n## 4. Overlap: end to end (decode + detect + track + align + write, models loaded) against the aligner")
    print(
        f"alone on the same frames decoded beforehand, best of {args.repeat} rounds; 'of alone' = overlapped / "
        "alone (the issue's goal: 80 %)"
    )
    print(
        f"{'video':32s} {'size':>10s} {'frames':>7s} {'decode':>8s} {'alone':>8s} {'seq.':>8s} {'overl.':>8s} "
        f"{'of alone':>9s}"
    )
    rows = []
    for v in videos:
        r = overlap_rates(v, args)
        print(
            f"{v.name:32s} {r['size']:>10s} {r['frames']:7d} {r['decode_fps']:8.1f} {r['alone_fps']:8.1f} "
            f"{r['sequential_fps']:8.1f} {r['overlapped_fps']:8.1f} {r['overlapped_fps'] / r['alone_fps']:8.0%}",
            flush=True,
        )
        rows.append({"video": v.name, **r})
    return rows


def faces_command(pairs: list[tuple[Path, Path]], args) -> list[str]:
    """`emofusion faces` for (video, out) pairs, run by this Python (a bare GPU node has src/ on PYTHONPATH and no
    console script)."""
    settings = {
        "batch_size": args.batch_size,
        "device": args.device,
        "min_face_size": args.min_face_size,
        "max_side": args.max_side or None,
        "detect_every": args.detect_every,
    }
    cmd = [sys.executable, "-c", "import sys; from emofusion.cli import main; sys.exit(main())", "faces"]
    cmd += ["--config-json", json.dumps({"faces": settings}), "--threads", str(args.threads)]
    for i, (video, out) in enumerate(pairs):
        cmd += ["--video", str(video), "--clip", f"clip{i}", "--out", str(out)]
    return cmd


def table_shards(videos: list[Path], args) -> list[dict]:
    print("\n## 5. Shards: one `emofusion faces` process per clip against one process for all of them")
    # a one-video run (--quick) still needs two clips to see a start-up: the video twice
    clips = videos if len(videos) > 1 else videos * 2
    print(f"{'clips':>5s} {'frames':>7s} {'per-clip s':>10s} {'shard s':>8s} {'start-up/job s':>15s} {'ratio':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {}
        for mode in ("per_clip", "shard"):
            pairs = [(v, Path(tmp) / mode / f"{i}.h5") for i, v in enumerate(clips)]
            start = time.perf_counter()
            for cmd in [faces_command(pairs, args)] if mode == "shard" else [faces_command([p], args) for p in pairs]:
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    skip(args, f"table 5 ({mode}): emofusion faces failed ({last})", failed=True)
                    return []
            seconds[mode] = time.perf_counter() - start
        import h5py

        frames = 0
        for i in range(len(clips)):
            with h5py.File(Path(tmp) / "shard" / f"{i}.h5") as h5:
                frames += len(h5["valid"])
    startup = (seconds["per_clip"] - seconds["shard"]) / (len(clips) - 1)
    row = {"clips": len(clips), "frames": frames, **{f"{k}_s": v for k, v in seconds.items()}, "startup_s": startup}
    print(
        f"{len(clips):5d} {frames:7d} {seconds['per_clip']:10.1f} {seconds['shard']:8.1f} {startup:15.1f} "
        f"{seconds['per_clip'] / seconds['shard']:6.2f}",
        flush=True,
    )
    return [row]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", nargs="*", type=Path, help="videos to run (default: the shared test videos)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--min-face-size", type=int, default=20)
    p.add_argument("--max-side", type=int, default=640, help="detection downscaling (0 = full resolution)")
    p.add_argument("--detect-every", type=int, default=1, help="faces.detect_every (1 = full MTCNN on every frame)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--baseline-frames", type=int, default=24, help="frames per video for table 2 (0 = all)")
    p.add_argument("--loop", type=int, default=8, help="length multiple of the looped video in table 3")
    p.add_argument("--loop-video", type=Path, default=DATA / "pyfeat_videos" / "single_face.mp4")
    p.add_argument(
        "--tables",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        choices=[1, 2, 3, 4, 5, 6],
        help="which tables to run (default: 1 2 3; 4 = the overlapped pipeline against the aligner alone; 5 = "
        "per-clip processes against one shard process; 6 = one content at 360p, 720p and 1080p)",
    )
    p.add_argument("--repeat", type=int, default=3, help="tables 4 and 6: rounds per video, the best one reported")
    p.add_argument("--resolution-seconds", type=float, default=6.0, help="table 6: seconds of --loop-video")
    p.add_argument("--quick", action="store_true", help="one short video, 8 frames, loop 2x (a smoke test)")
    p.add_argument("--json", metavar="PATH", help="also write every table's figures as JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--keep", help=argparse.SUPPRESS)  # the child's store, kept there
    args = p.parse_args()
    args.skipped = []
    if args.child:
        child(args)
        return

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    videos = args.videos or [DATA / v for v in DEFAULT_VIDEOS]
    if args.quick:
        videos, args.baseline_frames, args.loop = videos[:1], 8, 2
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        sys.exit(f"missing video(s): {', '.join(missing)} (set EMOFUSION_SHARED_DATA or pass --videos)")
    device = args.device
    print(
        f"# face stage benchmark: {platform.node()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device != "cpu" and torch.cuda.is_available() else "")
    )
    print(
        f"# batch_size {args.batch_size}, min_face_size {args.min_face_size}, max_side {args.max_side or 'off'}, "
        f"detect_every {args.detect_every}"
    )

    tables = {}
    if 1 in args.tables:
        tables["end_to_end"] = table_end_to_end(videos, args)
    if 2 in args.tables:
        tables["same_frames"] = table_same_frames(videos, args)
    if 3 in args.tables:
        tables["length"] = table_length(args)
    if 4 in args.tables:
        tables["overlap"] = table_overlap(videos, args)
    if 5 in args.tables:
        tables["shards"] = table_shards(videos, args)
    if 6 in args.tables:
        tables["resolution"] = table_resolution(args)
    if args.json:
        settings = {k: getattr(args, k) for k in ("batch_size", "min_face_size", "max_side", "detect_every")}
        write_figures(args.json, "faces", {**tables, "settings": settings, "skipped": args.skipped}, device=args.device)
    if any(s["failed"] for s in args.skipped):
        sys.exit("some runs failed: " + "; ".join(s["note"] for s in args.skipped if s["failed"]))


if __name__ == "__main__":
    main()
