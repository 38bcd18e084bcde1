"""Speed and peak memory of the embedding stage per backbone, and read throughput of a merged feature store.

    .venv/bin/python benchmarks/embed.py                          # CPU: default backbones, 2000 face frames
    .venv/bin/python benchmarks/embed.py --device cuda            # GPU: float32 and float16 autocast rows
    .venv/bin/python benchmarks/embed.py --quick                  # 256 frames, small store

Three tables:

1. Embedding: each backbone in its own process (so its peak memory is its own) runs the stage's own code path
   (``emofusion.features.stage.embed_faces`` / ``embed_audio`` / ``embed_transcript``) on the same input:
   a face store of ``--frames`` real aligned crops (the demo clip's cropped_aligned images repeated, in the face
   stage's layout and compression), a tone-and-noise WAV of the same number of frames at 30 fps, and a
   transcript of 2.5 words per second. Frames per second exclude building the backbone (one warm-up batch
   first); peak RSS is the process's high-water mark above its size after building; on CUDA also
   ``torch.cuda.max_memory_allocated``. Visual rows also give the backbone's forward alone (``forward fps``): the
   same batch of crops already on the device as uint8, embedded over and over (resize, convert, normalise and
   the network, no reading), so the stage's rate next to it says how much reading and copying cost.
   User-weight backbones (hsemotion, r2plus1d) run with randomly initialised
   weights written to a temporary file: the same network, so the same speed.
2. Store reads: ``--clips`` clips of 500 frames x 128 float32 written as shards and merged with
   ``emofusion.features.stage.merge_shards``; then every clip read through ``FeatureStore.read`` (lazy, one
   contiguous read per clip; a fresh reader, and the same reader's next pass), the whole store through
   ``FeatureStore.load``, and a plain sequential ``read()`` of the same file's bytes; all warm (the file read
   once first), so the ratio is the reader's overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from figures import write_figures  # noqa: E402  (benchmarks/ is not a package)

DEMO_CLIP = REPO / "resources" / "demo" / "cropped_aligned" / "demo09-30-320x180"
DEFAULT = ["visual:fer", "visual:pyemotion", "visual:hsemotion", "audio:egemaps", "text:minilm"]
GPU_EXTRA = ["visual:r2plus1d"]  # ~20 GFLOPs per frame (an 8-frame window each): minutes on 2 CPU cores


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ------------------------------------------------------------------------------------------------- inputs


def make_face_store(path: Path, frames: int) -> None:
    """A face store of real aligned crops: the demo clip's images repeated to ``frames``, chunked and gzipped as
    the face stage writes them (the face store's writer, chunks of 32 frames), about 1 in 8 frames without a face."""
    import numpy as np
    from PIL import Image

    from emofusion.faces.config import FaceSettings
    from emofusion.faces.store import create_face_store

    images = sorted(DEMO_CLIP.glob("*.jpg"))
    crops = np.stack([np.asarray(Image.open(p).convert("RGB").resize((112, 112))) for p in images])
    idx = np.arange(frames) % len(crops)
    valid = (np.arange(frames) % 8) != 7
    with create_face_store(path, frames, size=112, batch=32) as store:
        for lo in range(0, frames, 256):
            store.write(lo, crops=crops[idx[lo : lo + 256]], valid=valid[lo : lo + 256])
        settings = FaceSettings.from_config({"size": 112})
        store.finish(
            clip="bench", video="", source="mtcnn", settings=settings, width=112, height=112, provenance={}, started=0
        )


def even_times(work: Path):
    """The frame times of the benchmark's WAV, from its sidecar (it has no video to scan: a constant rate, as a
    CFR video's)."""
    import numpy as np

    meta = json.loads((work / "bench.json").read_text())
    return np.arange(meta["frames"], dtype=np.float64) / meta["fps"]


def make_audio(directory: Path, frames: int, fps: float = 30.0) -> Path:
    """An audio-stage WAV + sidecar of ``frames / fps`` seconds (a tone with noise), written the stage's way."""
    import numpy as np
    import soundfile as sf

    from emofusion.io import write_json

    sr = 16000
    n = round(frames / fps * sr)
    t = np.arange(n) / sr
    rng = np.random.default_rng(0)
    wav = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t))) + 0.05 * rng.standard_normal(n)
    path = directory / "bench.wav"
    sf.write(path, wav.astype(np.float32), sr, subtype="PCM_16")
    write_json(
        directory / "bench.json",
        {
            "schema": "emofusion.audio/1",
            "video": "bench",
            "audio_source": "bench",
            "sample_rate": sr,
            "num_samples": n,
            "duration_seconds": n / sr,
            "video_start_seconds": 0.0,
            "video_duration_seconds": frames / fps,
            "frames": frames,
            "fps": fps,
            "time_origin": "first video frame",
            "source_stream": None,
            "has_audio": True,
            "audio_start_seconds": 0.0,
            "offset_seconds": 0.0,
            "offset_samples": 0,
            "valid_start_sample": 0,
            "valid_end_sample": n,
            "clipped_samples": 0,
            "gaps": 0,
            "gap_seconds": 0.0,
            "overlaps": 0,
            "overlap_seconds": 0.0,
        },
    )
    return path


def make_transcript(directory: Path, frames: int, fps: float = 30.0) -> Path:
    """A transcript of 2.5 words per second (conversational speech) over the clip, in the transcript layout."""
    import numpy as np
    import pandas as pd

    from emofusion.asr.transcript import COLUMNS, SCHEMA
    from emofusion.io import write_parquet

    vocab = (
        "well i think that is really quite good but we should not go there again today because it was "
        "so loud and everybody seemed a little tired after the long drive home"
    ).split()
    n = int(frames / fps * 2.5)
    starts = np.arange(n) * 0.4
    rows = [
        {
            "kind": "word",
            "segment": 0,
            "text": vocab[i % len(vocab)],
            "start": s,
            "end": s + 0.3,
            "probability": 1.0,
            "avg_logprob": np.nan,
            "no_speech_prob": np.nan,
            "compression_ratio": np.nan,
        }
        for i, s in enumerate(starts)
    ]
    path = directory / "bench.parquet"
    write_parquet(path, pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS), metadata={"schema": SCHEMA})
    return path


def random_weights(name: str, directory: Path) -> dict:
    """Options for a user-weight backbone with randomly initialised weights (same network, same speed)."""
    import torch

    path = directory / f"{name}.pt"
    if name == "hsemotion":
        from torchvision.models import efficientnet_b0

        torch.save(efficientnet_b0(weights=None, num_classes=10).state_dict(), path)
    elif name == "r2plus1d":
        from torchvision.models.video import r2plus1d_18

        torch.save(r2plus1d_18(weights=None).state_dict(), path)
    elif name == "facenet":
        from facenet_pytorch import InceptionResnetV1

        torch.save(InceptionResnetV1(pretrained=None).state_dict(), path)
    else:
        return {}
    return {"weights": str(path)}


# --------------------------------------------------------------------------------------------- one backbone


def child(args) -> None:
    """Measure one backbone (run in its own process); prints one JSON line."""
    import torch

    from emofusion.device import resolve_device
    from emofusion.features import stage
    from emofusion.features.backbones import build_backbone

    torch.set_num_threads(args.threads)
    modality, name = args.child.split(":")
    work = Path(args.work)
    device = resolve_device(args.device, key="--device", tf32=args.tf32)  # as the stage: exact float32 by default
    options = random_weights(name, work) if modality == "visual" else {}
    backbone = build_backbone(modality, name, options, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    if modality == "visual":
        faces = work / "faces.h5"

        def run(frames_store):
            return stage.embed_faces(backbone, frames_store, batch_size=args.batch_size, amp=args.amp)

        run(work / "warm.h5")  # one small store first: kernels chosen, caches warm
        base = current_rss_mb()
        t0 = time.perf_counter()
        _, valid = run(faces)
    elif modality == "audio":
        base = current_rss_mb()
        t0 = time.perf_counter()
        _, valid, _ = stage.embed_audio(backbone, work / "bench.wav", times=even_times(work))
    else:
        backbone.embed_words(["warm", "up"])
        base = current_rss_mb()
        t0 = time.perf_counter()
        _, valid, _ = stage.embed_transcript(
            backbone, work / "bench.parquet", work / "bench.wav", times=even_times(work)
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if modality == "visual":
        forward_fps = forward_only(backbone, faces, args, device)
    out = {
        "backbone": f"{modality}:{name}",
        "amp": bool(args.amp and backbone.amp and device.type == "cuda"),
        "width": backbone.width,
        "frames": len(valid),
        "embedded": int(valid.sum()),
        "seconds": seconds,
        "fps": len(valid) / seconds,
        "peak_rss_mb": rss_mb(),
        "above_built_mb": rss_mb() - base,
    }
    if modality == "visual":
        out["forward_fps"] = forward_fps
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def forward_only(backbone, faces: Path, args, device) -> float:
    """Frames per second of ``backbone.embed`` alone on one batch of uint8 crops already on the device (for a
    windowed backbone, each frame's window), repeated over about as many frames as the stage embedded."""
    import numpy as np
    import torch

    from emofusion.faces.store import FaceStore
    from emofusion.features import stage

    with FaceStore(faces) as store:
        crops = torch.from_numpy(store.crops(0, args.batch_size)).to(device)
    window = int(getattr(backbone, "window", 1))
    if window > 1:
        idx = np.maximum(np.arange(len(crops))[:, None] - np.arange(window - 1, -1, -1)[None, :], 0)
        crops = crops[torch.as_tensor(idx, device=device)]
    use_amp = bool(args.amp and backbone.amp and device.type == "cuda")
    repeats = max(2, args.frames // len(crops))

    def once():
        with stage.autocast(device, use_amp):
            return backbone.embed(crops)

    once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return repeats * len(crops) / (time.perf_counter() - t0)


def embed_table(args, work: Path) -> list[dict]:
    rows, skipped = [], args.skipped
    amps = [False, True] if args.device == "cuda" else [False]
    for spec in args.backbones:
        for amp in amps:
            cmd = (
                [
                    sys.executable,
                    __file__,
                    "--child",
                    spec,
                    "--work",
                    str(work),
                    "--device",
                    args.device,
                    "--batch-size",
                    str(args.batch_size),
                    "--threads",
                    str(args.threads),
                ]
                + (["--amp"] if amp else [])
                + (["--tf32"] if args.tf32 else [])
            )
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:  # e.g. an optional wheel (PyEmotion) not installed: skip the row, say why
                note = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"{spec}: skipped ({note})", file=sys.stderr)
                skipped.append({"backbone": spec, "amp": amp, "reason": note})
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            if amp and not row["amp"]:
                continue  # the backbone does not autocast: same as the float32 row
            rows.append(row)
            print(f"  {row['backbone']:<18} amp={row['amp']!s:<5} {row['fps']:9.1f} frames/s", file=sys.stderr)
    return rows


# ------------------------------------------------------------------------------------------------- reading


def read_table(args, work: Path) -> dict:
    import numpy as np

    from emofusion.features import stage
    from emofusion.features.store import FeatureStore, store_attrs, write_store

    rng = np.random.default_rng(0)
    attrs = store_attrs(
        modality="visual",
        backbone="bench",
        width=128,
        native_rate=0.0,
        timeline="t",
        weights_sha256="none",
        weights_source="bench",
        licence="-",
        provenance={},
    )
    shards = []
    for i in range(args.clips):
        path = work / "shards" / f"clip{i:04d}.h5"
        write_store(
            path,
            [(f"clip{i:04d}", rng.standard_normal((500, 128)).astype(np.float32), rng.random(500) > 0.1, 30.0)],
            attrs,
        )
        shards.append(path)
    merged = work / "merged.h5"
    t0 = time.perf_counter()
    stage.merge_shards(shards, merged, provenance={})
    merge_s = time.perf_counter() - t0
    size = merged.stat().st_size
    payload = args.clips * 500 * (128 * 4 + 1)

    def plain() -> float:
        t = time.perf_counter()
        with open(merged, "rb", buffering=0) as f:
            while f.read(8 << 20):
                pass
        return time.perf_counter() - t

    def lazy() -> float:  # a fresh reader: every clip's datasets looked up on its first read
        store = FeatureStore(merged, backbone="bench")
        t = time.perf_counter()
        for clip in store.clips:
            store.read(clip)
        store.close()
        return time.perf_counter() - t

    warm_store = FeatureStore(merged, backbone="bench")
    for clip in warm_store.clips:
        warm_store.read(clip)

    def again() -> float:  # the same reader's next epoch: datasets already open
        t = time.perf_counter()
        for clip in warm_store.clips:
            warm_store.read(clip)
        return time.perf_counter() - t

    def whole() -> float:
        t = time.perf_counter()
        FeatureStore(merged, backbone="bench").load()
        return time.perf_counter() - t

    plain()  # warm the page cache: every row below reads the same cached bytes
    best = {
        name: min(fn() for _ in range(3))
        for name, fn in (("plain", plain), ("lazy", lazy), ("again", again), ("load", whole))
    }
    warm_store.close()
    return {
        "clips": args.clips,
        "file_mb": size / 2**20,
        "payload_mb": payload / 2**20,
        "merge_s": merge_s,
        **{f"{k}_mb_s": size / 2**20 / v for k, v in best.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per backbone process")
    p.add_argument("--clips", type=int, default=400, help="clips in the read benchmark's store")
    p.add_argument(
        "--backbones",
        nargs="+",
        metavar="MODALITY:NAME",
        help=f"default: {' '.join(DEFAULT)} (+ {' '.join(GPU_EXTRA)} with --device cuda)",
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--amp", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tf32", action="store_true", help="TF32 on CUDA (default: exact float32, as the stage)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.child:
        child(args)
        return
    if args.quick:
        args.frames, args.clips = 256, 50
    if args.backbones is None:
        args.backbones = DEFAULT + (GPU_EXTRA if args.device == "cuda" else [])
    import torch

    args.skipped = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_face_store(work / "faces.h5", args.frames)
        make_face_store(work / "warm.h5", 2 * args.batch_size)
        make_audio(work, args.frames)
        make_transcript(work, args.frames)
        print(f"embedding {args.frames} frames per backbone on {args.device}", file=sys.stderr)
        rows = embed_table(args, work)
        reads = read_table(args, work)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "-"
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, device {args.device} "
        f"({gpu}), {args.threads} torch threads, batch {args.batch_size}\n"
    )
    print(
        "| backbone | width | AMP | frames | embedded | frames/s | forward alone frames/s | peak RSS MB | "
        "above built MB |" + (" CUDA peak MB |" if args.device == "cuda" else "")
    )
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if args.device == "cuda" else ""))
    for r in rows:
        fwd = f"{r['forward_fps']:.1f}" if "forward_fps" in r else "-"
        print(
            f"| {r['backbone']} | {r['width']} | {'fp16' if r['amp'] else 'fp32'} | {r['frames']} | "
            f"{r['embedded']} | {r['fps']:.1f} | {fwd} | {r['peak_rss_mb']:.0f} | {r['above_built_mb']:.0f} |"
            + (f" {r['cuda_peak_mb']:.0f} |" if "cuda_peak_mb" in r else "")
        )
    for s in args.skipped:
        print(f"\nskipped: {s['backbone']} ({s['reason']})")
    print(
        f"\nstore: {reads['clips']} clips x 500 frames x 128 float32, {reads['file_mb']:.1f} MB on disk; merge of "
        f"{reads['clips']} shards {reads['merge_s']:.2f} s\n"
    )
    print("| read | MB/s |\n|---|---|")
    print(f"| plain sequential read() of the file | {reads['plain_mb_s']:.0f} |")
    print(f"| FeatureStore.read, clip by clip, first pass (lazy open) | {reads['lazy_mb_s']:.0f} |")
    print(f"| FeatureStore.read, clip by clip, next pass (datasets open) | {reads['again_mb_s']:.0f} |")
    print(f"| FeatureStore.load (whole store) | {reads['load_mb_s']:.0f} |")
    if args.json:
        write_figures(args.json, "embed", {"embed": rows, "read": reads, "skipped": args.skipped}, device=args.device)


if __name__ == "__main__":
    main()
