"""Face stage entry (what ``emofusion faces`` calls): the subject's aligned face in every frame of a clip, one
HDF5 store per clip (layout in :mod:`emofusion.faces.store`).

* :func:`extract_faces` (source ``mtcnn``): the video is decoded once as a stream, ``faces.batch_size`` frames at
  a time (:mod:`emofusion.video`); MTCNN runs on the whole batch (:mod:`emofusion.faces.detector`); a tracker
  picks the subject's face in each frame (:mod:`emofusion.faces.tracker`); one batched closed-form similarity
  transform (least squares from the 5 landmarks to the ArcFace template) and one ``grid_sample`` per chunk cut the
  aligned crops (:mod:`emofusion.faces.align`). Memory is bounded by the batch, whatever the video's length.
* :func:`faces_from_crops` (source ``cropped_aligned``, :mod:`emofusion.faces.crops`): corpora that ship aligned
  crops; no detection.
* :func:`extract_face_shard`: a list of clips in one process, MTCNN loaded once, each store written as it ends.

Decoding, detection and the store's writes overlap (:mod:`emofusion.faces.pipeline`); frames are decoded on the
GPU when ``faces.decode`` says so (:func:`decode_device`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.device import resolve_device
from emofusion.errors import ConfigError
from emofusion.faces.align import cut_faces, face_template, similarity_transforms
from emofusion.faces.config import FaceSettings, FaceSummary
from emofusion.faces.crops import faces_from_crops
from emofusion.faces.detector import DETECTION_VERSION, MTCNNDetector, mtcnn_weights
from emofusion.faces.memory import release_freed_memory
from emofusion.faces.pipeline import run_overlapped
from emofusion.faces.store import FaceStore, create_face_store, log_summary
from emofusion.faces.tracker import SubjectTracker
from emofusion.log import logger, progress
from emofusion.video import FrameBatch, VideoStream

__all__ = [
    "FaceAligner",
    "FaceJob",
    "FaceSettings",
    "FaceStore",
    "extract_face_shard",
    "extract_faces",
    "faces_from_crops",
]


class FaceAligner:
    """Detect, choose and align the subject's face in batches of frames of one clip (keeps the tracker state).

    ``detector``: an :class:`MTCNNDetector` already loaded (a shard's clips share one; it is reset here), else
    one is made from ``settings``."""

    def __init__(
        self,
        settings: FaceSettings,
        *,
        width: int,
        height: int,
        side: str | None,
        device,
        detector: MTCNNDetector | None = None,
    ):
        import torch

        self.settings = settings
        self.device = torch.device(device)
        if detector is None:
            detector = make_detector(settings, self.device)
        else:
            detector.reset()
        self.detector = detector
        self.tracker = SubjectTracker(
            side=side, width=width, min_probability=settings.min_probability, reacquire_after=settings.reacquire_after
        )
        self.template = face_template(settings.size, settings.margin)

    def detection_images(self, frames):
        """The detector's images of CPU ``frames`` on a CPU detector, for the decoding thread to make beside the
        decoding; None otherwise (the detector's device makes them in :meth:`__call__`)."""
        if frames.device.type != "cpu" or self.device.type != "cpu":
            return None
        return self.detector.detection_images(frames)

    def __call__(self, frames, images=None) -> dict[str, np.ndarray]:
        """``frames (B, 3, H, W)`` uint8 (any device), ``images`` their :meth:`detection_images` where made -> numpy
        crops, boxes, landmarks, probability, valid."""
        import torch

        frames = frames.to(self.device, non_blocking=True)
        if images is None:
            images = self.detector.detection_images(frames)
        else:  # made beside the decoder: on the detector's device, as the frames
            images = images.to(self.device, non_blocking=True)
        B = frames.shape[0]
        S = self.settings.size
        dets = self.detector(frames, images)
        chosen = np.full(B, -1, dtype=np.int64)
        for b in range(B):  # sequential by nature (each choice depends on the previous one); a few boxes each
            lo, hi = dets.offsets[b], dets.offsets[b + 1]
            if hi > lo:
                j = self.tracker.choose(dets.boxes[lo:hi], dets.probs[lo:hi])
                chosen[b] = lo + j if j >= 0 else -1
            else:
                self.tracker.choose(dets.boxes[:0], dets.probs[:0])
        valid = chosen >= 0
        boxes = np.full((B, 4), np.nan, np.float32)
        landmarks = np.full((B, 5, 2), np.nan, np.float32)
        probability = np.zeros(B, np.float32)
        crops = np.zeros((B, S, S, 3), np.uint8)
        if valid.any():
            rows = chosen[valid]
            boxes[valid] = dets.boxes[rows]
            landmarks[valid] = dets.points[rows]
            probability[valid] = dets.probs[rows]
            sel = torch.as_tensor(np.flatnonzero(valid), device=self.device)
            with torch.inference_mode():
                m = similarity_transforms(torch.as_tensor(landmarks[valid], device=self.device), self.template)
                crops[valid] = cut_faces(frames, m, S, index=sel, images=images).cpu().numpy()
        release_freed_memory()
        return {"crops": crops, "boxes": boxes, "landmarks": landmarks, "probability": probability, "valid": valid}


def make_detector(settings: FaceSettings, device) -> MTCNNDetector:
    """The MTCNN of ``settings`` on ``device`` (loading it is most of a job's start-up: a shard loads it once)."""
    return MTCNNDetector(
        min_face_size=settings.min_face_size,
        thresholds=settings.thresholds,
        factor=settings.pyramid_factor,
        max_side=settings.max_side,
        detect_every=settings.detect_every,
        device=device,
    )


def decode_device(decode: str, device) -> str:
    """Where ``faces.decode`` decodes, given the detector's ``device``: ``auto`` decodes on the detector's GPU
    (falling back to the CPU per video, with a warning, where NVDEC cannot decode it) and on the CPU otherwise."""
    import torch

    if decode == "cpu":
        return "cpu"
    if decode == "cuda" and not torch.cuda.is_available():
        raise ConfigError("faces.decode is 'cuda' but no CUDA device is visible; set faces.decode to auto or cpu")
    if device.type == "cuda":
        return str(device)  # the detector's GPU: its frames need no copy
    return "cuda" if decode == "cuda" else "cpu"


def extract_faces(
    video: str | Path,
    out: str | Path,
    *,
    clip: str,
    settings: FaceSettings | None = None,
    threads: int = 1,
    provenance: dict[str, Any] | None = None,
    detector: MTCNNDetector | None = None,
    pipeline: str = "overlapped",
) -> FaceSummary:
    """Detect, track and align the subject's face in every frame of ``video``; write the store to ``out``
    atomically (nothing is left at ``out`` on failure). ``clip`` ending in ``_left``/``_right`` picks that side.

    ``detector``: a loaded MTCNN to reuse (see :func:`extract_face_shard`). ``pipeline``: ``overlapped`` decodes,
    detects and writes at once (:mod:`emofusion.faces.pipeline`); ``sequential`` does one after the other (the
    reference the tests compare it with: both write the same store)."""
    from emofusion.corpus import side_of

    if pipeline not in ("overlapped", "sequential"):
        raise ValueError(f"pipeline {pipeline!r} is not overlapped or sequential")
    settings = settings or FaceSettings.from_config()
    started = time.perf_counter()
    device = resolve_device(settings.device)
    decode_on = decode_device(settings.decode, device)
    overlapped = pipeline == "overlapped"
    stream = VideoStream(
        video,
        batch_size=settings.batch_size,
        threads=threads,
        device=decode_on,
        prefetch=not overlapped and device.type == "cuda",
    )
    info = stream.info
    side = side_of(clip)
    logger.info(
        "%s: %s, %d frames of %dx%d (%s, %.2f fps avg), decoded on %s; MTCNN on %s, batches of %d%s",
        clip,
        video,
        stream.frames,
        info.width,
        info.height,
        info.codec,
        info.fps,
        stream.decode_device,
        device,
        settings.batch_size,
        f"; subject on the {side}" if side else "",
    )
    aligner = FaceAligner(settings, width=info.width, height=info.height, side=side, device=device, detector=detector)
    provenance = {
        **(provenance or {}),
        "detector": {
            "name": "mtcnn",
            "package": "facenet-pytorch",
            "weights_sha256": mtcnn_weights(),
            "detection_version": DETECTION_VERSION,
            "device": str(device),
            "decode": stream.decode_device,
        },
    }
    with create_face_store(out, stream.frames, size=settings.size, batch=settings.batch_size) as store:

        def detect(item: tuple[FrameBatch, Any]) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
            batch, images = item
            return batch.start, batch.timestamps, aligner(batch.frames, images)

        def write(done: tuple[int, np.ndarray, dict[str, np.ndarray]]) -> None:
            start, timestamps, res = done
            store.write(start, **res, timestamps=timestamps)

        # CPU detection: the detection images are made beside the decoding (in the decoding thread when overlapped,
        # so they overlap the detector); on a GPU detection_images gives None and the aligner makes them there
        batches = (
            (b, aligner.detection_images(b.frames))
            for b in progress(stream, total=stream.batches, desc=f"faces {clip}", unit="batch")
        )
        if overlapped:
            run_overlapped(batches, detect, write, name=f"faces-{clip}")
        else:
            for batch in batches:
                done = detect(batch)
                del batch  # drop this loop's reference before the next batch is decoded (the stream keeps its own)
                write(done)
                del done
        summary = store.finish(
            clip=clip,
            video=str(video),
            source="mtcnn",
            settings=settings,
            width=info.width,
            height=info.height,
            provenance=provenance,
            started=started,
        )
    log_summary(summary, video)
    return summary


@dataclass(frozen=True)
class FaceJob:
    """One clip of a shard: its video, id, store path and, for the ``cropped_aligned`` source, its crops folder."""

    video: str
    clip: str
    out: str
    crops: str | None = None


def extract_face_shard(
    jobs: list[FaceJob],
    *,
    settings: FaceSettings | None = None,
    threads: int = 1,
    provenance: Callable[[FaceJob], dict[str, Any]] | None = None,
) -> list[FaceSummary]:
    """The face stores of a shard of clips in one process: MTCNN is loaded once (with the imports, most of a
    job's start-up), then each clip is extracted in turn and its store written atomically as it finishes, so a
    killed shard loses only the clip it was on. A clip whose input is bad is logged and skipped; the others go
    on, and an InputError naming every failed clip is raised at the end."""
    from emofusion.errors import InputError

    settings = settings or FaceSettings.from_config()
    detector = None
    summaries, failed = [], []
    for i, job in enumerate(jobs):
        prov = provenance(job) if provenance else None
        try:
            if job.crops:
                summaries.append(
                    faces_from_crops(job.crops, job.video, job.out, clip=job.clip, settings=settings, provenance=prov)
                )
                continue
            if detector is None:
                detector = make_detector(settings, resolve_device(settings.device))
            summaries.append(
                extract_faces(
                    job.video,
                    job.out,
                    clip=job.clip,
                    settings=settings,
                    threads=threads,
                    provenance=prov,
                    detector=detector,
                )
            )
        except InputError as e:
            if len(jobs) == 1:
                raise
            logger.error("clip %s (%d of %d in this shard) failed: %s", job.clip, i + 1, len(jobs), e)
            failed.append(f"{job.clip} ({e})")
    if failed:
        raise InputError(
            f"{len(failed)} of {len(jobs)} clips of the shard failed, their stores not written: " + "; ".join(failed)
        )
    return summaries
