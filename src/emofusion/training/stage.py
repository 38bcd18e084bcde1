"""Training stage entry (what ``emofusion train`` calls): ``train_run``, one (experiment, fold, seed) run, from checked
data to the best checkpoint, resumable.

Optimiser and schedule from the resolved preset (Adam/AdamW, linear warm-up, ReduceLROnPlateau on the validation
mean CCC), float16 autocast with a gradient scaler on CUDA (or bfloat16 autocast, ``amp: bf16``, on any device),
gradient clipping, early stopping; features on the device when they fit (``fusion.device_data``); the best epoch by
validation mean CCC (frame level: windows reassembled as `emofusion evaluate` does) is the checkpoint. Seeds:
Python, NumPy and torch at the start, the shuffle of epoch e drawn from ``default_rng([seed, e])``, so it does not
depend on how the run got there. Every epoch ends with ``resume.pt`` (model, optimiser, scheduler, scaler, RNG
states, best weights, log) written atomically; a run killed at any point restarts from the last one and, on the
CPU, ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import ConfigError
from emofusion.io import atomic_path, write_json
from emofusion.log import logger, progress
from emofusion.metrics import TARGETS, split_ccc
from emofusion.provenance import config_hash, provenance
from emofusion.training.experiments import resolve_experiment as resolve_experiment  # re-exported for the command
from emofusion.training.predict import autocast_dtype, fold_clip_labels, predict_frames
from emofusion.training.windows import Windowing

RESUME = "resume.pt"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (1 << 32))  # noqa: NPY002  (third-party code may draw from the legacy global RNG)
    torch.manual_seed(seed)


def build_fusion_model(experiment: Mapping[str, Any], dims: Mapping[str, int], steps: int):
    """The experiment's model for these store widths, ``seq_len`` = the windowing's steps."""
    from emofusion.models import build_config, build_model

    key = f"fusion.experiments.{experiment['name']}"
    options = dict(experiment["model_options"])
    if "seq_len" in options and int(options["seq_len"]) != steps:
        raise ConfigError(
            f"{key}.model_options.seq_len is {options['seq_len']} but the windowing gives {steps} steps "
            f"per window ({key}.training.steps); drop seq_len or make them equal"
        )
    options.pop("seq_len", None)
    if "dims" in options:
        raise ConfigError(f"{key}.model_options.dims: widths come from the feature stores; remove it")
    try:
        config = build_config(experiment["model"], dims=dict(dims), seq_len=steps, **options)
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None
    if config.n_targets != 2:
        raise ConfigError(
            f"{key}.model_options.n_targets is {config.n_targets}: runs train a valence and an arousal "
            "head together (set n_targets: 2; for rjcma this is its two-head option)"
        )
    return build_model(experiment["model"], **config.to_dict())


def compiler_for_torch_compile(device_type: str = "cpu") -> str | None:
    """The compiler torch.compile's kernels would be built with, or None: inductor's C++ kernels on the CPU ($CXX,
    g++, clang++), Triton's C launchers on CUDA ($CC, gcc, clang)."""
    import shutil

    env, names = ("CC", ("gcc", "clang", "cc")) if device_type == "cuda" else ("CXX", ("g++", "clang++", "c++"))
    for name in (os.environ.get(env), *names):
        if name and shutil.which(name):
            return name
    return None


def train_epoch(
    model, batches, *, opt, scaler, loss_fn, device, amp: bool | str, grad_clip: float | None
) -> list[float]:
    """One pass of optimisation over ``batches`` (dicts of :meth:`FusionData.batch`); the loss of each batch.
    ``amp``: a preset's value (see :func:`autocast_dtype`); ``scaler`` enabled for float16 only."""
    import torch

    dtype = autocast_dtype(amp, device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    losses = []
    for batch in batches:
        feats = {m: x.to(device, non_blocking=True) for m, x in batch["feats"].items()}
        masks = {m: x.to(device, non_blocking=True) for m, x in batch["masks"].items()}
        target, tmask = batch["target"].to(device), batch["target_mask"].to(device)
        with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            pred = model(feats, masks)
        loss = loss_fn(pred.float(), target, tmask)  # float32 whatever the autocast state
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(opt)
        scaler.update()
        losses.append(loss.detach())
    return [float(x) for x in losses]  # one device sync at the end, not one per batch


def _fingerprint(experiment, fold, seed, data) -> str:
    """What a resumed run must share with the killed one. Snakemake reruns training when the labels, a store or
    the folds change, but resume.pt survives it: resuming on other data would silently mix two runs. So: the
    labels' and the split's content, and each store's weights, options and file (size and mtime: hashing a
    multi-GB store at every start would cost more than it guards)."""
    import hashlib

    def store_identity(store):
        stat = store.path.stat()
        return {
            "weights": store.attrs["weights_sha256"],
            "config": store.attrs["provenance"].get("config_hash"),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }

    labels = hashlib.sha256(data.labels.tobytes() + data.label_valid.tobytes()).hexdigest()
    return config_hash(
        {
            "experiment": experiment,
            "fold": fold,
            "seed": seed,
            "width": data.width,
            "stores": {m: store_identity(s) for m, s in data.stores.items()},
            "clips": data.clips,
            "frames": data.total,
            "split": data.split,
            "labels": labels,
        }
    )


def _read_resume(path: Path) -> dict | None:
    """The training state in ``path``, or None after setting an unreadable file aside (a disk filled or a file
    copied half-way): renamed to ``resume.pt.corrupt`` with a warning, so this run starts over and later runs do
    not trip on it again."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict):
            return state
        problem = f"holds a {type(state).__name__}, not a training state"
    # IndexError, KeyError, ...: torch's weights-only unpickler on bytes that are no pickle (a file of text)
    except (RuntimeError, EOFError, ValueError, OSError, IndexError, KeyError, TypeError, pickle.UnpicklingError) as e:
        problem = f"cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    logger.warning("%s %s; set aside as %s, training this run from the start", path, problem, aside)
    return None


def train_run(
    experiment: Mapping[str, Any],
    *,
    fold: int,
    seed: int,
    out: str | Path,
    manifest,
    labels: str | Path,
    stores: Mapping[str, str],
    device,
    in_memory: bool | None = None,
    workers: int = 0,
    stop_after: int | None = None,
    device_data: bool | str = "auto",
    device_fraction: float = 0.5,
    compile_model: bool = False,
) -> dict[str, Any]:
    """Train one run into ``out`` (model.pt, log.jsonl, run.json; resume.pt while it runs). Returns run.json's
    content. ``stop_after``: return after that many epochs of this call, leaving resume.pt (for tests).
    ``device_data``/``device_fraction``: fusion.device_data and fusion.device_memory_fraction; ``compile_model``:
    fusion.compile."""
    import torch

    from emofusion.models import CCCLoss, save_checkpoint
    from emofusion.training.data import FusionData

    out = Path(out)
    name = experiment["name"]
    tr = experiment["training"]
    windowing = Windowing.from_training(tr, key=f"fusion.experiments.{name}.training")
    data = FusionData(
        manifest=manifest,
        labels=labels,
        stores=stores,
        backbones=experiment["stores"],
        fold=fold,
        windowing=windowing,
        in_memory=in_memory,
        device=device,
        device_data=device_data,
        device_fraction=device_fraction,
        rate="train",  # clips at another rate than the training clips' meet the model on that rate's grid
    )
    seed_everything(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_fusion_model(experiment, data.width, windowing.steps).to(device)
    # The compiled wrapper shares the module's parameters; only the optimisation steps go through it, so the
    # state dicts (resume.pt, model.pt) and validation stay those of the plain module.
    if compile_model and compiler_for_torch_compile(device.type) is None:
        need = "a C compiler ($CC, gcc, clang)" if device.type == "cuda" else "a C++ compiler ($CXX, g++, clang++)"
        raise ConfigError(
            f"fusion.compile: true needs {need} on PATH for torch.compile's kernels on {device.type}; install one "
            "or set fusion.compile: false"
        )
    step_model = torch.compile(model) if compile_model else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if tr["optimizer"] == "adamw" else torch.optim.Adam
    opt = opt_cls(params, lr=tr["lr"], weight_decay=tr["weight_decay"])
    sched = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=tr["plateau_factor"], patience=tr["plateau_patience"]
        )
        if tr["scheduler"] == "plateau"
        else None
    )
    amp = tr["amp"]
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype(amp, device) == torch.float16)
    loss_fn = CCCLoss(reduction=tr["loss_reduction"])

    train_windows = data.windows(data.clips_of("train"), windowing.train_hop)
    _, label_idx = data.gather_index(train_windows)
    train_windows = train_windows[data.label_valid[label_idx].any(axis=(1, 2))]  # windows without labels teach nothing
    val_clips = data.clips_of("validation")
    val_windows = data.windows(val_clips, windowing.hop)
    val_labels = {c: fold_clip_labels(data, c) for c in val_clips}
    bs = int(tr["batch_size"])
    fingerprint = _fingerprint(experiment, fold, seed, data)

    start, best, best_epoch, since_best, best_state, log = 0, -float("inf"), -1, 0, None, []
    resume_path = out / RESUME
    state = _read_resume(resume_path) if resume_path.is_file() else None
    if state is not None:
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if sched is not None:
                sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng_cpu"])
            if device.type == "cuda" and "rng_cuda" in state:
                torch.cuda.set_rng_state_all(state["rng_cuda"])
            start, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
            since_best, best_state, log = state["since_best"], state["best_state"], json.loads(state["log"])
            logger.info("%s: resuming after epoch %d (best %.4f at epoch %d)", resume_path, start - 1, best, best_epoch)
        else:
            logger.warning("%s belongs to another configuration or data; starting over", resume_path)

    logger.info(
        "%s fold %d seed %d: %s (%d parameters) on %s, %d training windows of %d frames (L=%d), %d validation windows",
        name,
        fold,
        seed,
        experiment["model"],
        sum(p.numel() for p in params),
        f"{device}, torch.compile" if compile_model else device,
        len(train_windows),
        windowing.window,
        windowing.steps,
        len(val_windows),
    )
    epochs_run = 0
    for epoch in range(start, int(tr["epochs"])):
        if tr["patience"] and since_best >= tr["patience"]:
            break
        t0 = time.perf_counter()
        warm = int(tr["warmup_epochs"])
        if epoch < warm:
            for g in opt.param_groups:
                g["lr"] = tr["lr"] * (epoch + 1) / warm
        perm = np.random.default_rng([seed, epoch]).permutation(len(train_windows))
        batches = [perm[i : i + bs].tolist() for i in range(0, len(perm), bs)]
        loader = data.batches(train_windows, batches, workers=workers, pin=device.type == "cuda")
        bar = progress(loader, total=len(batches), desc=f"{name} epoch {epoch}", unit="batch")
        losses = train_epoch(
            step_model, bar, opt=opt, scaler=scaler, loss_fn=loss_fn, device=device, amp=amp, grad_clip=tr["grad_clip"]
        )
        frames, val_loss = predict_frames(
            model, data, val_clips, device=device, batch_size=bs, amp=amp, loss_fn=loss_fn, workers=workers
        )
        scores = split_ccc(frames, {c: val_labels[c][0] for c in val_clips}, {c: val_labels[c][1] for c in val_clips})
        lr = opt.param_groups[0]["lr"]
        if sched is not None and epoch >= warm:
            sched.step(scores["mean"])
        if scores["mean"] > best:
            best, best_epoch, since_best = scores["mean"], epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        entry = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_loss": val_loss,
            **{f"val_ccc_{t}": scores[t] for t in TARGETS},
            "val_ccc_mean": scores["mean"],
            "lr": lr,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        log.append(entry)
        logger.info(
            "epoch %d: train loss %.4f, val loss %.4f, val CCC %.4f / %.4f (mean %.4f)%s, %.1f s",
            epoch,
            entry["train_loss"],
            val_loss,
            scores["valence"],
            scores["arousal"],
            scores["mean"],
            " best" if best_epoch == epoch else "",
            entry["seconds"],
        )
        state = {
            "fingerprint": fingerprint,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else {},
            "scaler": scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "best": best,
            "best_epoch": best_epoch,
            "since_best": since_best,
            "best_state": best_state,
            "log": json.dumps(log),
        }
        if device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        with atomic_path(resume_path) as tmp:
            torch.save(state, tmp)
        _write_log(out / "log.jsonl", log)
        epochs_run += 1
        if stop_after is not None and epochs_run >= stop_after:
            return {}

    if best_state is None:
        raise ConfigError(f"fusion.experiments.{name}.training.epochs: no epoch was trained")
    model.load_state_dict(best_state)
    store_paths = {m: str(p) for m, p in stores.items()}
    weights = {m: s.attrs["weights_sha256"] for m, s in data.stores.items()}
    prov = provenance(config=dict(experiment), seed=seed, fold=fold, stores=store_paths, weights_sha256=weights)
    extra = {
        "experiment": dict(experiment),
        "fold": fold,
        "seed": seed,
        "best_epoch": best_epoch,
        "best_val_ccc_mean": best,
        "normaliser": data.normaliser.to_plain(),
        "weights_sha256": weights,
        "stores": store_paths,
        "run_provenance": prov,
    }
    save_checkpoint(out / "model.pt", model, extra=extra, seed=seed)
    _write_log(out / "log.jsonl", log)
    info = {
        "experiment": name,
        "model": experiment["model"],
        "fold": fold,
        "seed": seed,
        "modalities": list(data.modalities),
        "stores": store_paths,
        "config": dict(experiment),
        "best_epoch": best_epoch,
        "best_val_ccc_mean": best,
        "provenance": prov,
    }
    if data.windowing.rate is not None:  # the frames per second the windows count: evaluation and predict meet
        info["rate"] = data.windowing.rate  # other rates on this rate's grid
    write_json(out / "run.json", info)
    resume_path.unlink(missing_ok=True)
    logger.info("%s: best epoch %d, validation mean CCC %.4f -> %s", name, best_epoch, best, out / "model.pt")
    return info


def _write_log(path: Path, log: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in log))
