"""Training stage entry (what ``emofusion train`` calls): ``train_run``, one (experiment, fold, seed) run, from checked
data to the best checkpoint, resumable.

The steps, in order: the fold's data (:func:`fold_data`: features on the device when they fit,
``fusion.device_data``), seeds and the model (:mod:`.model`), the optimisation objects (:class:`.loop.Optimisation`),
the resume state (:class:`.resume.ResumeState`), then per epoch one pass of optimisation and a validation
(:mod:`.loop`; early stopping, the best epoch by validation mean CCC at the frame level), and at the end the run's
artefacts (:func:`save_run`). Seeds: Python, NumPy and torch at the start, the shuffle of epoch e drawn from
``default_rng([seed, e])``, so it does not depend on how the run got there. Every epoch ends with ``resume.pt``
written atomically; a run killed at any point restarts from the last one and, on the CPU, ends bit-identical to an
uninterrupted run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np

from emofusion.errors import ConfigError
from emofusion.features.store import FeatureStore
from emofusion.fusion_data.data import FusionData, Placement, load_fold
from emofusion.fusion_data.windows import Windowing
from emofusion.io import atomic_path, write_json
from emofusion.log import logger, progress
from emofusion.metrics import TARGETS
from emofusion.provenance import provenance
from emofusion.training.experiments import resolve_experiment as resolve_experiment  # re-exported for the command
from emofusion.training.experiments import runtime_defaults
from emofusion.training.loop import Optimisation, Validation, train_epoch
from emofusion.training.model import build_fusion_model as build_fusion_model  # re-exported: tests, predict tests
from emofusion.training.model import compiler_for_torch_compile, seed_everything
from emofusion.training.resume import RESUME, ResumeState, fingerprint


def fold_data(
    experiment: Mapping[str, Any], *, fold: int, manifest, labels: str | Path, stores: Mapping[str, str], placement
) -> FusionData:
    """The fold's data, checked before any training: the stores (backbone, schema, coverage of the manifest),
    the labels, a fold with training and validation labels; clips at another rate than the training clips' meet
    the model on that rate's grid."""
    name = experiment["name"]
    windowing = Windowing.from_training(experiment["training"], key=f"fusion.experiments.{name}.training")
    return load_fold(
        manifest,
        fold=fold,
        windowing=windowing,
        rate="train",
        stores=stores,
        backbones=experiment["stores"],
        labels=labels,
        placement=placement,
        check_labels=True,
    )


def _check_compiler(device) -> None:
    if compiler_for_torch_compile(device.type) is None:
        need = "a C compiler ($CC, gcc, clang)" if device.type == "cuda" else "a C++ compiler ($CXX, g++, clang++)"
        raise ConfigError(
            f"fusion.compile: true needs {need} on PATH for torch.compile's kernels on {device.type}; install one "
            "or set fusion.compile: false"
        )


def train_windows(data: FusionData) -> np.ndarray:
    """The training clips' windows (``train_hop`` apart) that hold at least one valid label (the others teach
    nothing)."""
    windows = data.windows(data.clips_of("train"), data.windowing.train_hop)
    _, label_idx = data.gather_index(windows)
    return windows[data.label_valid[label_idx].any(axis=(1, 2))]


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
    device_data: bool | str | None = None,
    device_fraction: float | None = None,
    compile_model: bool | None = None,
) -> dict[str, Any]:
    """Train one run into ``out`` (model.pt, log.jsonl, run.json; resume.pt while it runs). Returns run.json's
    content. ``stop_after``: return after that many epochs of this call, leaving resume.pt (for tests).
    ``device_data``/``device_fraction``: fusion.device_data and fusion.device_memory_fraction; ``compile_model``:
    fusion.compile; each None takes the schema's default (the one place a default lives)."""
    import torch

    defaults = runtime_defaults()
    device_data = defaults["device_data"] if device_data is None else device_data
    device_fraction = defaults["device_memory_fraction"] if device_fraction is None else device_fraction
    compile_model = defaults["compile"] if compile_model is None else compile_model

    out = Path(out)
    name, tr = experiment["name"], experiment["training"]
    placement = Placement(in_memory=in_memory, device=device, device_data=device_data, device_fraction=device_fraction)
    data = fold_data(experiment, fold=fold, manifest=manifest, labels=labels, stores=stores, placement=placement)
    seed_everything(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_fusion_model(experiment, data.width, data.windowing.steps).to(device)
    # The compiled wrapper shares the module's parameters; only the optimisation steps go through it, so the
    # state dicts (resume.pt, model.pt) and validation stay those of the plain module.
    if compile_model:
        _check_compiler(device)
    step_model = torch.compile(model) if compile_model else model
    optimisation = Optimisation.build(model, tr, device)
    windows = train_windows(data)
    bs = int(tr["batch_size"])
    validate = Validation(data, batch_size=bs, amp=tr["amp"], workers=workers)
    state = ResumeState.load(
        out / RESUME,
        fingerprint(experiment, fold, seed, data),
        model=model,
        optimisation=optimisation,
        device=device,
    )
    logger.info(
        "%s fold %d seed %d: %s (%d parameters) on %s, %d training windows of %d frames (L=%d), %d validation windows",
        name,
        fold,
        seed,
        experiment["model"],
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        f"{device}, torch.compile" if compile_model else device,
        len(windows),
        data.windowing.window,
        data.windowing.steps,
        len(validate.windows),
    )
    epochs_run = 0
    for epoch in range(state.start, int(tr["epochs"])):
        if tr["patience"] and state.since_best >= tr["patience"]:
            break
        t0 = time.perf_counter()
        optimisation.warm_up(epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(len(windows))
        batches = [perm[i : i + bs].tolist() for i in range(0, len(perm), bs)]
        loader = data.batches(windows, batches, workers=workers, pin=device.type == "cuda")
        bar = progress(loader, total=len(batches), desc=f"{name} epoch {epoch}", unit="batch")
        losses = train_epoch(
            step_model,
            bar,
            opt=optimisation.opt,
            scaler=optimisation.scaler,
            loss_fn=optimisation.loss_fn,
            device=device,
            amp=tr["amp"],
            grad_clip=tr["grad_clip"],
        )
        scores, val_loss = validate(model, device=device, loss_fn=optimisation.loss_fn)
        lr = optimisation.lr  # the rate this epoch trained at, before the schedule steps
        optimisation.end_epoch(epoch, scores["mean"])
        best = state.record(epoch, scores["mean"], model)
        entry = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_loss": val_loss,
            **{f"val_ccc_{t}": scores[t] for t in TARGETS},
            "val_ccc_mean": scores["mean"],
            "lr": lr,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        state.log.append(entry)
        _log_epoch(entry, best)
        state.save(model=model, optimisation=optimisation, device=device)
        _write_log(out / "log.jsonl", state.log)
        epochs_run += 1
        if stop_after is not None and epochs_run >= stop_after:
            return {}

    if state.best_state is None:
        raise ConfigError(f"fusion.experiments.{name}.training.epochs: no epoch was trained")
    model.load_state_dict(state.best_state)
    info = save_run(out, experiment, fold=fold, seed=seed, stores=stores, data=data, model=model, state=state)
    state.remove()
    logger.info(
        "%s: best epoch %d, validation mean CCC %.4f -> %s", name, state.best_epoch, state.best, out / "model.pt"
    )
    return info


def _log_epoch(entry: Mapping[str, Any], best: bool) -> None:
    logger.info(
        "epoch %d: train loss %.4f, val loss %.4f, val CCC %.4f / %.4f (mean %.4f)%s, %.1f s",
        entry["epoch"],
        entry["train_loss"],
        entry["val_loss"],
        entry["val_ccc_valence"],
        entry["val_ccc_arousal"],
        entry["val_ccc_mean"],
        " best" if best else "",
        entry["seconds"],
    )


def save_run(
    out: Path, experiment: Mapping[str, Any], *, fold: int, seed: int, stores, data: FusionData, model, state
) -> dict[str, Any]:
    """The run's artefacts from its best weights (loaded in ``model``): model.pt (with the normaliser, the
    stores' weights and provenance), log.jsonl and run.json, whose content is returned."""
    from emofusion.models import save_checkpoint

    store_paths = {m: str(p) for m, p in stores.items()}
    weights = {m: cast(FeatureStore, s).attrs["weights_sha256"] for m, s in data.sources.items()}
    prov = provenance(config=dict(experiment), seed=seed, fold=fold, stores=store_paths, weights_sha256=weights)
    extra = {
        "experiment": dict(experiment),
        "fold": fold,
        "seed": seed,
        "best_epoch": state.best_epoch,
        "best_val_ccc_mean": state.best,
        "normaliser": data.normaliser.to_plain(),
        "weights_sha256": weights,
        "stores": store_paths,
        "run_provenance": prov,
    }
    save_checkpoint(out / "model.pt", model, extra=extra, seed=seed)
    _write_log(out / "log.jsonl", state.log)
    info = {
        "experiment": experiment["name"],
        "model": experiment["model"],
        "fold": fold,
        "seed": seed,
        "modalities": list(data.modalities),
        "stores": store_paths,
        "config": dict(experiment),
        "best_epoch": state.best_epoch,
        "best_val_ccc_mean": state.best,
        "provenance": prov,
    }
    if data.windowing.rate is not None:  # the frames per second the windows count: evaluation and predict meet
        info["rate"] = data.windowing.rate  # other rates on this rate's grid
    write_json(out / "run.json", info)
    return info


def _write_log(path: Path, log: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in log))
