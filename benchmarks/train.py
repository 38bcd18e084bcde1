"""Fusion training speed: epoch time with the features in memory, read lazily from the stores, and held on the
device (``fusion.device_data``: gathered there by index, no DataLoader), in one run, with the model's own time
beside it (the loader must not be the bottleneck); on CUDA also GPU utilisation and peak memory; float32 against
float16 (CUDA) and bfloat16 autocast (``--amp``).

    PYTHONPATH=src python benchmarks/train.py --quick                       # small synthetic corpus, CPU, seconds
    PYTHONPATH=src python benchmarks/train.py --device cuda --amp all --workers 8           # Aff-Wild2-sized
    PYTHONPATH=src python benchmarks/train.py --amp bf16 --data memory device               # CPU: bf16 vs fp32
    PYTHONPATH=src python benchmarks/train.py --models rjca --data device --compile         # eager vs compiled

Synthetic stores written with the store writer (into --dir, a temporary folder by default): --clips clips of
together --frames frames (Aff-Wild2: about 3 M frames, 600 clips), at the widths of the published backbones:
visual 512 (R(2+1)D), audio 128 (VGGish), text 768 (BERT); labels everywhere valid. Models at their published
sizes and recipes: rjca (visual + audio, window 512 = 16 steps pooling 8 frames, batch 64) and rjcma (visual +
audio + text, window 300, hop 200, L 300, batch 12). For each model, data mode and AMP setting, over --batches
batches of the epoch's shuffled order (the table projects them onto the whole epoch):
  loader   the DataLoader alone: reading (lazy), gathering, pooling, to tensors
  model    the same number of optimisation steps on one batch already on the device (the model's own time)
  epoch    the real thing: emofusion.training.loop.train_epoch over the DataLoader
With --compile each row is also measured with torch.compile (fusion.compile); warmup_s is its two warm-up steps,
the compilation included.
GPU: utilisation = mean of nvidia-smi samples every 100 ms during the epoch part; peak = max_memory_allocated.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from emofusion.corpus import MANIFEST_COLUMNS
from emofusion.features.store import store_attrs, write_store
from emofusion.fusion_data.batches import WindowBatches
from emofusion.fusion_data.data import FusionData, Placement, load_fold
from emofusion.fusion_data.windows import Windowing
from emofusion.metrics import INVALID, TARGETS
from emofusion.models import CCCLoss
from emofusion.training.loop import train_epoch
from emofusion.training.model import build_fusion_model, compiler_for_torch_compile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import write_figures

WIDTHS = {"visual": 512, "audio": 128, "text": 768}
RECIPES = {
    "rjca": {"stores": ("visual", "audio"), "training": {"window": 512, "steps": 16, "pool": 8, "batch_size": 64}},
    "rjcma": {
        "stores": ("visual", "audio", "text"),
        "training": {"window": 300, "hop": 200, "steps": 300, "pool": 1, "batch_size": 12},
    },
}
QUICK_WIDTHS = {"visual": 64, "audio": 16, "text": 32}
QUICK_OPTIONS = {"rjca": {"lstm_layers": 1}, "rjcma": {"tcn_channels": {m: [32, 32] for m in WIDTHS}}}


def write_corpus(root: Path, frames: int, clips: int, widths: dict[str, int]) -> tuple[Path, Path, dict[str, str]]:
    """Manifest, labels.h5 and one store per modality; clip lengths vary around frames / clips."""
    import h5py

    rng = np.random.default_rng(0)
    lengths = rng.integers(frames // clips // 2, 3 * frames // clips // 2, size=clips)
    lengths = np.maximum((lengths * frames / lengths.sum()).astype(int), 1)
    ids = [f"c{i:04d}" for i in range(clips)]
    splits = ["validation" if i % 5 == 0 else "train" for i in range(clips)]
    manifest = pd.DataFrame(
        {
            "clip": ids,
            "video_id": ids,
            "video": "",
            "audio": "",
            "split": splits,
            "fold": [1] * clips,
            "annotation": "",
            "crops": "",
            "subject": "",
            "frames": lengths,
            "fps": 30.0,
        },
        columns=MANIFEST_COLUMNS,
    )
    with h5py.File(root / "labels.h5", "w") as h5:
        h5.attrs.update(schema_version=1, targets=list(TARGETS), invalid_value=INVALID)  # a labels store
        for c, n in zip(ids, lengths, strict=True):
            g = h5.create_group(c)
            g.create_dataset("values", data=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32))
            g.create_dataset("valid", data=np.ones((n, 2), bool))
    stores = {}
    for m, width in widths.items():
        path = root / f"{m}.h5"
        items = (
            (c, rng.standard_normal((n, width), dtype=np.float32), rng.random(n) > 0.1, 30.0)
            for c, n in zip(ids, lengths, strict=True)
        )
        write_store(
            path,
            items,
            store_attrs(
                modality=m,
                backbone="bench",
                width=width,
                native_rate=0.0,
                timeline="synthetic",
                weights_sha256="none",
                weights_source="none",
                licence="none",
                provenance={},
            ),
        )
        stores[m] = str(path)
    return root / "labels.h5", manifest, stores


class GpuSampler:
    """nvidia-smi utilisation samples every 100 ms while active."""

    def __init__(self):
        self.samples: list[float] = []
        self._proc = None

    def __enter__(self):
        self._proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100", "-i", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self):
        for line in self._proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def __exit__(self, *exc):
        self._proc.terminate()
        self._proc.wait()

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else float("nan")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    name: str,
    data: FusionData,
    *,
    device,
    amp: bool | str,
    batches: int,
    workers: int,
    quick: bool,
    compiled: bool = False,
) -> dict:
    tr = RECIPES[name]["training"]
    exp = {"name": name, "model": name, "model_options": QUICK_OPTIONS[name] if quick else {}, "stores": {}}
    torch.manual_seed(0)
    model = build_fusion_model(exp, data.width, data.windowing.steps).to(device)
    if compiled:  # as train_run with fusion.compile: the optimisation steps through the compiled wrapper
        model = torch.compile(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp is True and device.type == "cuda")
    loss_fn = CCCLoss(reduction="flat")
    windows = data.windows(data.clips_of("train"), data.windowing.train_hop)
    bs = tr["batch_size"]
    order = np.random.default_rng(0).permutation(len(windows))
    all_batches = [order[i : i + bs].tolist() for i in range(0, len(order), bs)]
    chosen = all_batches[:batches]

    def loader():
        if data.device is not None:  # on the device: gathered there, no DataLoader
            return data.batches(windows, chosen)
        return torch.utils.data.DataLoader(
            WindowBatches(data, windows),
            sampler=chosen,
            batch_size=None,
            num_workers=0 if data.in_memory else workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )

    t0 = time.perf_counter()
    for _ in loader():
        pass
    sync(device)
    loader_s = time.perf_counter() - t0

    one = next(iter(loader()))
    t0 = time.perf_counter()
    train_epoch(model, [one] * 2, opt=opt, scaler=scaler, loss_fn=loss_fn, device=device, amp=amp, grad_clip=None)
    sync(device)
    warmup_s = time.perf_counter() - t0  # two steps, plus the compilation when compiled
    t0 = time.perf_counter()
    train_epoch(
        model, [one] * len(chosen), opt=opt, scaler=scaler, loss_fn=loss_fn, device=device, amp=amp, grad_clip=None
    )
    sync(device)
    model_s = time.perf_counter() - t0

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sampler = GpuSampler() if device.type == "cuda" else None
    t0 = time.perf_counter()
    if sampler:
        with sampler:
            train_epoch(
                model, loader(), opt=opt, scaler=scaler, loss_fn=loss_fn, device=device, amp=amp, grad_clip=None
            )
            sync(device)
    else:
        train_epoch(model, loader(), opt=opt, scaler=scaler, loss_fn=loss_fn, device=device, amp=amp, grad_clip=None)
    epoch_s = time.perf_counter() - t0
    scale = len(all_batches) / len(chosen)
    mode = "device" if data.device is not None else "memory" if data.in_memory else f"lazy ({workers} workers)"
    return {
        "model": name,
        "data": mode,
        "amp": {False: "fp32", True: "fp16", "bf16": "bf16"}[amp],
        "compile": compiled,
        "warmup_s": warmup_s,
        "batches": f"{len(chosen)}/{len(all_batches)}",
        "loader_s": loader_s * scale,
        "model_s": model_s * scale,
        "epoch_s": epoch_s * scale,
        "gpu_util": sampler.mean if sampler else None,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--frames", type=int, default=3_000_000, help="frames of the synthetic corpus")
    parser.add_argument("--clips", type=int, default=600, help="clips of the synthetic corpus")
    parser.add_argument(
        "--amp",
        choices=("off", "on", "both", "bf16", "all"),
        default="off",
        help="off: float32; on: float16 autocast (CUDA only); both: float32 and float16; bf16: "
        "float32 and bfloat16 (any device); all: the three",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        choices=("memory", "lazy", "device"),
        default=["memory", "lazy", "device"],
        help="data modes to measure (device: features on the device, fusion.device_data: true)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON (for benchmarks/affwild2.py)")
    parser.add_argument("--batches", type=int, default=100, help="batches timed per measurement (projected)")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the lazy mode")
    parser.add_argument("--models", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--dir", help="folder for the synthetic stores (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="20k frames, 40 clips, small widths and models")
    parser.add_argument(
        "--compile", action="store_true", help="also each row with torch.compile (fusion.compile; warmup_s: compiling)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.clips, args.batches = 20_000, 40, 10
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amps = {"off": [False], "on": [True], "both": [False, True], "bf16": [False, "bf16"], "all": [False, True, "bf16"]}[
        args.amp
    ]
    if device.type != "cuda":
        amps = [a for a in amps if a is not True] or [False]  # float16 autocast is CUDA's
    widths = QUICK_WIDTHS if args.quick else WIDTHS
    compile_rows = args.compile and compiler_for_torch_compile(device.type) is not None
    if args.compile and not compile_rows:
        print("skipped: the compiled rows (--compile): no compiler for torch.compile's kernels", flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        t0 = time.perf_counter()
        labels, manifest, stores = write_corpus(Path(tmp), args.frames, args.clips, widths)
        size = sum(Path(p).stat().st_size for p in stores.values()) / 2**30
        print(
            f"synthetic corpus: {int(manifest['frames'].sum())} frames, {args.clips} clips, stores "
            f"{', '.join(f'{m} {w}-d' for m, w in widths.items())} ({size:.1f} GiB), written in "
            f"{time.perf_counter() - t0:.0f} s; device {device}"
            + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        )
        rows = []
        for name in args.models:
            w = Windowing.from_training(RECIPES[name]["training"], key=name)
            for mode in args.data:
                t0 = time.perf_counter()
                modalities = RECIPES[name]["stores"]
                data = load_fold(
                    manifest,
                    fold=0,
                    windowing=w,
                    rate=None,
                    stores={m: stores[m] for m in modalities},
                    backbones={m: "bench" for m in modalities},
                    labels=labels,
                    placement=Placement(in_memory=mode != "lazy", device=device, device_data=mode == "device"),
                )
                setup = time.perf_counter() - t0
                for amp, compiled in [(a, c) for a in amps for c in ([False, True] if compile_rows else [False])]:
                    row = measure(
                        name,
                        data,
                        device=device,
                        amp=amp,
                        batches=args.batches,
                        workers=args.workers,
                        quick=args.quick,
                        compiled=compiled,
                    )
                    row["setup_s"] = setup
                    row["epoch_batches"] = int(row["batches"].split("/")[1])
                    row["epoch_frames"] = int(sum(data.frames[c] for c in data.clips_of("train")))
                    rows.append(row)
                    print(row, flush=True)
        table = pd.DataFrame(rows)
        print()
        print(table.to_markdown(index=False, floatfmt=".2f"))
        if args.json:
            write_figures(
                args.json,
                "train",
                {"rows": rows, "frames": int(manifest["frames"].sum()), "clips": args.clips, "quick": args.quick},
                device=str(device),
            )
    return rows


if __name__ == "__main__":
    main()
