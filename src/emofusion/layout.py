"""The results layout: where every stage writes under results/, in one place.

The workflow's rules name their outputs with these patterns (a ``{clip}`` or ``{video}`` in a pattern is a Snakemake
wildcard, and ``str.format`` fills it for one id); `emofusion status`, the repair commands and the experiments read
the same names, so a path changes here or nowhere. Paths are relative to the project folder, where `snakemake` runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# The modalities of the feature stores, in the order a fusion model concatenates them.
MODALITIES = ("visual", "audio", "text")

MANIFEST = "results/manifest.parquet"
LABELS = "results/labels.h5"
FACE_STORE = "results/faces/{clip}.h5"
AUDIO_WAV = "results/audio/{video}.wav"
AUDIO_META = "results/audio/{video}.json"  # the WAV's sidecar: its frame timeline
TRANSCRIPT = "results/transcripts/{video}.parquet"
WHISPER_CHECKPOINT = "results/asr/{model}.pt"  # a bundled CTranslate2 model converted for openai-whisper
STORE_ROOT = Path("results/features")
RUN_ROOT = Path("results/fusion")
REPORT = Path("results/report")
REPORT_FILES = ("results.csv", "results.md", "provenance.json")  # what `emofusion report` writes into REPORT
REPORT_FOLDERS = ("plots", "submission")
PREDICT_ROOT = Path("results/predict")  # <name>/<video stem>[_side].<name>.<csv|json|png|overlay.mp4>

# A run folder's files (the training/evaluation contract); the report reads none of model.pt but needs it there.
RUN_FILES = ("model.pt", "log.jsonl", "run.json", "predictions.parquet", "metrics.json")

# results/fusion/<experiment>/fold<k>/seed<s>, anywhere in a path (a run given as an absolute path counts)
RUN_LAYOUT = re.compile(r"(?:^|/)results/fusion/[^/]+/fold\d+/seed\d+$")
# a store (results/features/<modality>/<backbone>.h5) or one of its shards (.../<backbone>/<clip or video>.h5)
STORE_LAYOUT = re.compile(rf"(?:^|/)results/features/(?:{'|'.join(MODALITIES)})/[^/]+(?:/[^/]+)?\.h5$")


def store_path(modality: str, backbone: str, root: str | Path = STORE_ROOT) -> Path:
    """Where the embedding stage writes a store: ``results/features/<modality>/<backbone>.h5``."""
    return Path(root) / modality / f"{backbone}.h5"


def store_shard(modality: str, backbone: str, item: str) -> str:
    """One clip's (visual) or video's (audio, text) shard of a store, merged into :func:`store_path`."""
    return f"{STORE_ROOT}/{modality}/{backbone}/{item}.h5"


def run_dir(experiment: str, fold: int | str, seed: int | str, root: str | Path = RUN_ROOT) -> Path:
    """The run folder of one (experiment, fold, seed): ``results/fusion/<experiment>/fold<k>/seed<s>`` (with
    ``"{fold}"`` and the like, the rules' wildcard pattern)."""
    return Path(root) / experiment / f"fold{fold}" / f"seed{seed}"


def is_run_dir(run: str | os.PathLike) -> bool:
    """Whether ``run`` is a run folder of the workflow's layout, as given or resolved."""
    path = Path(run)
    return bool(RUN_LAYOUT.search(path.as_posix()) or RUN_LAYOUT.search(path.resolve().as_posix()))


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a feature store or store shard of the workflow's layout, as given or resolved."""
    p = Path(path)
    return bool(STORE_LAYOUT.search(p.as_posix()) or STORE_LAYOUT.search(p.resolve().as_posix()))
