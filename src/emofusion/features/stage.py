"""The embedding stage: face crops, audio or transcripts of one clip/video -> a feature shard; shards -> a store.

* Visual (per clip): the face store's crops are read in bounded row ranges of ``batch_size`` frames, the next
  range read by a thread while the device computes; only valid faces go through the network (invalid rows are
  zeros, valid False). On CUDA the host buffers are pinned and copied without blocking, and backbones that
  tolerate it run under float16 autocast.
* Audio (per video): the audio stage's WAV on the frame timeline; row i describes the window ending at frame i's
  presentation time (:func:`~emofusion.features.timeline.frame_times` of the video the sidecar names);
  validity is the sidecar's decoded span. A two-person video's ``_left`` / ``_right`` clips share the rows.
* Text (per video): one row per transcript word, put on the frames whose presentation time falls in that word.
* Merge: every shard of a (modality, backbone) copied into ``results/features/<modality>/<backbone>.h5`` after
  checking the shards agree on :data:`~emofusion.features.store.IDENTITY_ATTRS`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.audio.read import read_audio, read_audio_metadata
from emofusion.errors import EmofusionError, InputError
from emofusion.features.backbones import AudioBackbone, Backbone, TextBackbone, VisualBackbone
from emofusion.features.backbones import backbone_config as backbone_config  # re-exported for the commands
from emofusion.features.backbones import backbone_options as backbone_options
from emofusion.features.backbones import build_backbone as build_backbone
from emofusion.features.store import IDENTITY_ATTRS, StoreMismatch, check_rows, read_attrs, store_attrs, write_store
from emofusion.features.timeline import frame_times, words_on_frames
from emofusion.log import logger, progress
from emofusion.repair import rebuild_store


@dataclass(frozen=True)
class ClipRows:
    """One clip's rows on its frame timeline, as a shard stores them."""

    clip: str
    features: np.ndarray  # (N, D) float32
    valid: np.ndarray  # (N,) bool
    fps: float

    def item(self) -> tuple[str, np.ndarray, np.ndarray, float]:
        return self.clip, self.features, self.valid, self.fps


def autocast(device, enabled: bool, dtype=None):
    """float16 autocast on CUDA (bfloat16 on the CPU, where only tests ask for it); a no-op when disabled."""
    import torch

    if not enabled:
        return contextlib.nullcontext()
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------------------------------------------ visual


def _ranges(n: int, batch: int, window: int) -> list[tuple[int, int, int]]:
    """Row ranges (read_from, lo, hi): frames lo:hi embedded from crops read_from:hi (window-1 rows of context)."""
    return [(max(0, lo - window + 1), lo, min(n, lo + batch)) for lo in range(0, n, batch)]


def embed_faces(
    backbone: VisualBackbone,
    faces: str | os.PathLike,
    *,
    batch_size: int = 64,
    amp: bool = True,
    amp_dtype=None,
    clip: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A clip's face store -> (features (N, width) float32, valid (N,) bool): one row per frame.

    ``amp``: autocast when the backbone tolerates it (``backbone.amp``) on CUDA, or wherever ``amp_dtype`` is
    given (tests compare bfloat16 on the CPU against float32)."""
    import torch

    from emofusion.faces.store import FaceStore

    path = Path(faces)
    clip = clip or path.stem
    device = backbone.device
    window = int(getattr(backbone, "window", 1))
    use_amp = amp and backbone.amp and (device.type == "cuda" or amp_dtype is not None)
    with FaceStore(path) as faces_store:
        valid = np.asarray(faces_store.read("valid"), dtype=bool)
        n = len(valid)
        out = np.zeros((n, backbone.width), dtype=np.float32)
        if not valid.any():
            logger.warning(
                "%s: no valid face in %d frames; clip %s gets all-invalid %s features", path, n, clip, backbone.name
            )
            return out, valid
        ranges = [r for r in _ranges(n, batch_size, window) if valid[r[1] : r[2]].any()]
        pin = device.type == "cuda"

        def read(r: tuple[int, int, int]):
            start, _, hi = r
            block = torch.from_numpy(faces_store.crops(start, hi))  # contiguous rows: whole chunks, decompressed once
            return block.pin_memory() if pin else block

        # One range read ahead: h5py's gzip decoding of batch k+1 overlaps the device's work on batch k.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(read, ranges[0]) if ranges else None
            bar = progress(ranges, desc=f"embed {backbone.name} {clip}", unit="batch")
            for k, (start, lo, hi) in enumerate(bar):
                assert pending is not None  # submitted for every range
                block = pending.result()
                pending = pool.submit(read, ranges[k + 1]) if k + 1 < len(ranges) else None
                rows = np.flatnonzero(valid[lo:hi]) + lo  # frames to embed
                block = block.to(device, non_blocking=pin)
                if window > 1:
                    # (B, window) rows ending at each frame; before frame 0 repeat frame 0
                    idx = np.maximum(rows[:, None] - np.arange(window - 1, -1, -1)[None, :], 0) - start
                    batch = block[torch.as_tensor(idx, device=device)]  # (B, window, H, W, 3)
                else:
                    batch = block[torch.as_tensor(rows - start, device=device)]  # (B, H, W, 3)
                with autocast(device, use_amp, amp_dtype):
                    feats = backbone.embed(batch)
                if tuple(feats.shape) != (len(rows), backbone.width):
                    raise EmofusionError(
                        f"backbone {backbone.name} gave {tuple(feats.shape)} for {len(rows)} "
                        f"crops of clip {clip}; expected ({len(rows)}, {backbone.width})"
                    )
                out[rows] = feats.float().cpu().numpy()
    return out, valid


# ------------------------------------------------------------------------------------------------ audio, text


def _audio(wav: str | os.PathLike) -> tuple[np.ndarray, int, dict[str, Any]]:
    samples, sample_rate, meta = read_audio(Path(wav))
    for key in ("frames", "fps", "valid_start_sample", "valid_end_sample"):
        if key not in meta:
            raise InputError(f"audio sidecar of {wav} has no {key!r}; rerun `emofusion audio`")
    return samples, sample_rate, meta


def audio_frame_times(wav: str | os.PathLike, meta: dict[str, Any], times: np.ndarray | None = None) -> np.ndarray:
    """The frame times (s from the first frame) of the video an audio-stage WAV belongs to: ``times`` when the
    caller has them (checked against the sidecar's frame count), else :func:`frame_times` of the video the sidecar
    names."""
    n, fps = int(meta["frames"]), float(meta["fps"])
    if times is None:
        video = Path(str(meta.get("video") or ""))
        if not video.is_file():
            raise InputError(
                f"{wav}: its video {video} (named by the audio sidecar) does not exist, and the frame times come "
                "from it; rerun `emofusion audio` with the video where it is now"
            )
        times = frame_times(video, fps=fps)
    times = np.asarray(times, dtype=np.float64)
    if len(times) != n:
        raise InputError(
            f"{wav}: its sidecar says {n} frames but the video has {len(times)}; rerun `emofusion audio` for this video"
        )
    return times


def embed_audio(
    backbone: AudioBackbone, wav: str | os.PathLike, *, times: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """A video's audio-stage WAV -> (features (N, width), valid (N,), fps) on the video's frame timeline.

    Row i is the window ending at frame i's presentation time (``times``, default :func:`audio_frame_times`).
    A frame is valid when the window's end (its time) lies inside the sidecar's decoded span; invalid rows are
    zeros (the backbone saw padding there)."""
    samples, sample_rate, meta = _audio(wav)
    n, fps = int(meta["frames"]), float(meta["fps"])
    times = audio_frame_times(wav, meta, times)
    features = np.asarray(backbone.embed(samples, sample_rate, times), dtype=np.float32)
    if features.shape != (n, backbone.width):
        raise EmofusionError(
            f"audio backbone {backbone.name} gave {features.shape} for {n} frames of {wav}; "
            f"expected ({n}, {backbone.width})"
        )
    valid = audio_coverage(times, sample_rate, meta)
    features[~valid] = 0.0
    return features, valid, fps


def audio_coverage(times: np.ndarray, sample_rate: int, meta: dict[str, Any]) -> np.ndarray:
    """(N,) bool: the frame at each of ``times`` seconds lies inside the decoded span of the audio whose sidecar is
    ``meta`` (the audio input's validity; predict's ``has_audio``)."""
    at = np.round(times * sample_rate)
    valid = (at >= meta["valid_start_sample"]) & (at <= meta["valid_end_sample"])
    valid &= meta["valid_end_sample"] > meta["valid_start_sample"]
    return valid


def embed_transcript(
    backbone: TextBackbone,
    transcript: str | os.PathLike,
    wav: str | os.PathLike,
    *,
    times: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """A video's transcript -> (features (N, width), valid (N,), fps): each frame takes the row of the word
    spoken at its presentation time (no word: zeros, invalid). ``wav`` (its sidecar) gives the frame times
    (:func:`audio_frame_times`, unless ``times`` are given) and the duration."""
    from emofusion.asr.transcript import read_transcript

    meta = read_audio_metadata(Path(wav))
    fps = float(meta["fps"])
    times = audio_frame_times(wav, meta, times)
    words, _, _ = read_transcript(Path(transcript))
    words = words.reset_index(drop=True)
    texts = [str(w).strip() for w in words["text"]]
    if texts:
        rows = np.asarray(backbone.embed_words(texts), dtype=np.float32)
        if rows.shape != (len(texts), backbone.width):
            raise EmofusionError(
                f"text backbone {backbone.name} gave {rows.shape} for {len(texts)} words of "
                f"{transcript}; expected ({len(texts)}, {backbone.width})"
            )
    else:
        rows = np.zeros((0, backbone.width), dtype=np.float32)
    features, valid = words_on_frames(
        rows, words, times, audio_duration=float(meta["duration_seconds"]), source=str(transcript)
    )
    return features, valid, fps


# ------------------------------------------------------------------------------------------------------ shards


def write_shard(
    out: str | os.PathLike, rows: Sequence[ClipRows], backbone: Backbone, provenance: dict[str, Any]
) -> None:
    """Check every clip's rows (width, NaN/inf: an error naming the clip and backbone) and write the shard."""
    for r in rows:
        check_rows(r.features, r.valid, clip=r.clip, backbone=backbone.name, width=backbone.width)
    write_store(out, (r.item() for r in rows), store_attrs(**backbone.describe(), provenance=provenance))


def merge_shards(
    shards: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    provenance: dict[str, Any],
    clips: Sequence[str] | None = None,
    modality: str | None = None,
    backbone: str | None = None,
) -> dict[str, Any]:
    """Copy every shard's clip groups into one store at ``out`` (atomically).

    The shards must agree on the identity attributes (schema, modality, backbone, width, weights): a difference
    raises StoreMismatch naming both files. A clip in two shards is an error; with ``clips`` every listed clip
    must be present (others are left out). Root attributes come from the shards, provenance from the merge plus
    each shard's config hash."""
    from emofusion.features.store import store_clips, write_merged

    if not shards:
        raise InputError("embed-merge: no shards given")
    paths = [Path(s) for s in shards]
    first = read_attrs(paths[0])
    for key, want in (("modality", modality), ("backbone", backbone)):
        if want is not None and first[key] != want:
            raise StoreMismatch(f"{paths[0]}: {key} is {first[key]!r} but the merge is for {want!r}")
    owner: dict[str, Path] = {}
    shard_info = []
    for p in paths:
        attrs = read_attrs(p) if p != paths[0] else first
        identity = {key: attrs[key] for key in IDENTITY_ATTRS}
        identity["config_hash"] = attrs["provenance"].get("config_hash")  # the backbone's options
        for key, value in identity.items():
            want = first[key] if key != "config_hash" else first["provenance"].get("config_hash")
            if value != want:
                raise StoreMismatch(
                    f"shards disagree on {key}: {paths[0]} has {want!r}, {p} has "
                    f"{value!r}; rerun the embedding of the stale one (`{rebuild_store(p)}`)"
                )
        for c in store_clips(p):
            if c in owner:
                raise InputError(f"clip {c} is in two shards: {owner[c]} and {p}")
            owner[c] = p
        shard_info.append(
            {
                "path": str(p),
                "config_hash": attrs["provenance"].get("config_hash"),
                "git": attrs["provenance"].get("git"),
            }
        )
    wanted = sorted(owner) if clips is None else sorted(set(clips))
    missing = [c for c in wanted if c not in owner]
    if missing:
        raise InputError(
            f"embed-merge: no shard holds clip(s) {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}; embed them first"
        )
    attrs = {k: v for k, v in first.items() if k != "provenance"}
    attrs["provenance"] = json.dumps({**provenance, "shards": shard_info}, sort_keys=True, default=str)
    started = time.perf_counter()
    write_merged(out, attrs, ((c, owner[c]) for c in wanted))  # sorted: the same bytes whatever the shards' order
    logger.info(
        "merged %d clips from %d shards into %s in %.2f s", len(wanted), len(paths), out, time.perf_counter() - started
    )
    return {"clips": len(wanted), "shards": len(paths)}
