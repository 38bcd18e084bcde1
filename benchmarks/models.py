"""Parameters, forward+backward time and peak memory of every registered fusion model at the published shapes.

    PYTHONPATH=src python benchmarks/models.py                    # CPU, published shapes
    PYTHONPATH=src python benchmarks/models.py --quick            # small shapes, seconds
    PYTHONPATH=src python benchmarks/models.py --device cuda --amp

Shapes: the rjca family and the baselines at batch 64, L 16, visual and audio 512 each (the published clip-level
setup; unimodal on visual); rjcma at batch 12, L 300, visual 512 / audio 128 / text 768. Each model runs in its
own process so its peak memory is its own: CPU reports the peak resident set size above the process's size
before the model was built; CUDA reports ``torch.cuda.max_memory_allocated``. ``--quick`` runs every model in
this process instead (no per-model CPU peak there, shown as "-"). Time is the median over ``--iters`` timed
iterations of zero_grad + forward + CCC loss + backward, after ``--warmup`` untimed ones.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from emofusion.models import build_model, ccc_loss, list_models

RJCMA_SHAPE = {"batch": 12, "seq_len": 300, "dims": {"visual": 512, "audio": 128, "text": 768}}
AV_SHAPE = {"batch": 64, "seq_len": 16, "dims": {"visual": 512, "audio": 512}}
QUICK_RJCMA = {
    "batch": 2,
    "seq_len": 12,
    "dims": {"visual": 32, "audio": 16, "text": 48},
    "config": {"tcn_channels": {"visual": [16, 16], "audio": [8, 8], "text": [16, 8]}},
}
QUICK_AV = {"batch": 4, "seq_len": 8, "dims": {"visual": 32, "audio": 24}}


def shape_for(name: str, quick: bool) -> dict[str, Any]:
    shape = dict((QUICK_RJCMA if quick else RJCMA_SHAPE) if name == "rjcma" else (QUICK_AV if quick else AV_SHAPE))
    config = {"dims": shape["dims"], "seq_len": shape["seq_len"], **shape.get("config", {})}
    if name == "unimodal":
        config["dims"] = {"visual": shape["dims"]["visual"]}
    return {"batch": shape["batch"], "seq_len": shape["seq_len"], "config": config}


def rss_kib() -> int:
    """Current resident set size in KiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def measure(
    name: str, *, device: str, amp: bool, quick: bool, iters: int, warmup: int, isolated: bool = True
) -> dict[str, Any]:
    """Build one model and time it (in a child process of its own when ``isolated``)."""
    shape = shape_for(name, quick)
    dev = torch.device(device)
    torch.manual_seed(0)
    baseline = rss_kib()
    model = build_model(name, **shape["config"]).to(dev).train()
    B, L = shape["batch"], shape["seq_len"]
    feats = {m: torch.randn(B, L, d, device=dev) for m, d in model.config.dims}
    masks = {m: torch.ones(B, L, dtype=torch.bool, device=dev) for m in model.modalities}
    target = torch.rand(B, L, model.config.n_targets, device=dev) * 2 - 1
    amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(dev.type, enabled=amp and amp_dtype == torch.float16)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(warmup + iters):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            loss = ccc_loss(model(feats, masks), target)
        scaler.scale(loss).backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(dev) / 2**20
    elif isolated:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    else:
        peak_mib = None  # the process's peak RSS is shared by every model measured in it
    return {
        "model": name,
        "shape": f"B{B} L{L} " + "/".join(f"{m[0]}{d}" for m, d in model.config.dims),
        "params": sum(p.numel() for p in model.parameters()),
        "ms": 1000 * statistics.median(times),
        "peak_mib": peak_mib,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="autocast (fp16 on CUDA with a grad scaler, bf16 on CPU)")
    parser.add_argument("--quick", action="store_true", help="small shapes, runs in seconds")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--models", nargs="*", default=None, help="subset of registered models")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: measure one model, print JSON
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    common = {"device": args.device, "amp": args.amp, "quick": args.quick, "iters": args.iters, "warmup": args.warmup}
    if args.one:
        print(json.dumps(measure(args.one, **common)))
        return

    names = args.models or list_models()
    flags = ["--device", args.device, "--iters", str(args.iters), "--warmup", str(args.warmup)]
    flags += ["--amp"] * args.amp + ["--quick"] * args.quick
    mem = "peak CUDA alloc MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print(
        f"# torch {torch.__version__}, device {args.device}, amp {args.amp}, threads {torch.get_num_threads()}, "
        f"median of {args.iters} after {args.warmup} warm-up"
    )
    header = f"| {'model':<12} | {'shape':<26} | {'params':>11} | {'fwd+bwd ms':>10} | {mem:>19} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    rows = []
    for name in names:
        if args.quick:
            r = measure(name, **common, isolated=False)
        else:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", name, *flags], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise SystemExit(f"benchmark of {name} failed:\n{proc.stderr}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(r)
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        print(
            f"| {r['model']:<12} | {r['shape']:<26} | {r['params']:>11,} | {r['ms']:>10.1f} | {peak:>19} |", flush=True
        )
    if args.json:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from figures import write_figures

        write_figures(args.json, "models", {"rows": rows, "amp": args.amp}, device=args.device)


if __name__ == "__main__":
    main()
