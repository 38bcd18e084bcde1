"""A run's resume state: what ``resume.pt`` holds after every epoch (model, optimiser, scheduler, scaler, RNG
states, the best weights so far, the log), written atomically and read back by a restarted run, which then ends
bit-identical to an uninterrupted one on the CPU.

The state is only used by a run of the same configuration on the same data (:func:`fingerprint`); an unreadable
file is set aside (:func:`read_resume`), never trusted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emofusion.io import atomic_path
from emofusion.log import logger
from emofusion.provenance import config_hash

RESUME = "resume.pt"


def fingerprint(experiment, fold: int, seed: int, data) -> str:
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
            "stores": {m: store_identity(s) for m, s in data.sources.items()},
            "clips": data.clips,
            "frames": data.total,
            "split": data.split,
            "labels": labels,
        }
    )


def read_resume(path: Path) -> dict | None:
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


@dataclass
class ResumeState:
    """Where a run stands: the last finished ``epoch`` (-1: none yet), the best validation mean CCC, its epoch
    and weights, epochs since it (early stopping) and the log; with the optimisation objects it belongs to,
    saved to and loaded from ``path`` (``resume.pt``)."""

    path: Path
    fingerprint: str
    epoch: int = -1
    best: float = -float("inf")
    best_epoch: int = -1
    since_best: int = 0
    best_state: dict[str, Any] | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def start(self) -> int:
        """The first epoch still to train."""
        return self.epoch + 1

    @classmethod
    def load(cls, path: Path, fingerprint: str, *, model, optimisation, device) -> ResumeState:
        """The state in ``path`` restored into ``model``, ``optimisation`` (:class:`~.loop.Optimisation`) and
        torch's RNGs; a fresh state when there is none, it cannot be read, or it belongs to another run."""
        import torch

        fresh = cls(path=path, fingerprint=fingerprint)
        state = read_resume(path) if path.is_file() else None
        if state is None:
            return fresh
        if state.get("fingerprint") != fingerprint:
            logger.warning("%s belongs to another configuration or data; starting over", path)
            return fresh
        model.load_state_dict(state["model"])
        optimisation.load_state_dict(state)
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        out = cls(
            path=path,
            fingerprint=fingerprint,
            epoch=state["epoch"],
            best=state["best"],
            best_epoch=state["best_epoch"],
            since_best=state["since_best"],
            best_state=state["best_state"],
            log=json.loads(state["log"]),
        )
        logger.info("%s: resuming after epoch %d (best %.4f at epoch %d)", path, out.epoch, out.best, out.best_epoch)
        return out

    def record(self, epoch: int, score: float, model) -> bool:
        """Epoch ``epoch`` finished with validation mean CCC ``score``: keep the weights when it is the best so
        far (True), else count one more epoch since the best."""
        self.epoch = epoch
        if score > self.best:
            self.best, self.best_epoch, self.since_best = score, epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return True
        self.since_best += 1
        return False

    def save(self, *, model, optimisation, device) -> None:
        """``resume.pt``, atomically: this state with the model's, the optimisation's and the RNGs' states."""
        import torch

        state = {
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "model": model.state_dict(),
            **optimisation.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "best": self.best,
            "best_epoch": self.best_epoch,
            "since_best": self.since_best,
            "best_state": self.best_state,
            "log": json.dumps(self.log),
        }
        if device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def remove(self) -> None:
        """The run finished: no state to resume from."""
        self.path.unlink(missing_ok=True)
