"""Face stage entry (what ``emofusion faces`` calls): the subject's aligned face in every frame of a clip, one
HDF5 store per clip (layout in :mod:`emofusion.faces.store`).

* :func:`extract_faces` (source ``mtcnn``): the video is decoded once as a stream, ``faces.batch_size`` frames at
  a time (:mod:`emofusion.video`); MTCNN runs on the whole batch (:mod:`emofusion.faces.detector`); a tracker
  picks the subject's face in each frame (:mod:`emofusion.faces.tracker`); one batched closed-form similarity
  transform (least squares from the 5 landmarks to the ArcFace template) and one ``grid_sample`` per chunk cut the
  aligned crops (:mod:`emofusion.faces.align`). Memory is bounded by the batch, whatever the video's length.
* :func:`faces_from_crops` (source ``cropped_aligned``, :mod:`emofusion.faces.crops`): corpora that ship aligned
  crops; no detection.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.device import resolve_device
from emofusion.faces.align import face_template, similarity_transforms, warp_faces
from emofusion.faces.config import FaceSettings, FaceSummary
from emofusion.faces.crops import faces_from_crops
from emofusion.faces.detector import MTCNNDetector, mtcnn_weights
from emofusion.faces.memory import release_freed_memory
from emofusion.faces.store import create_store, finish_store, log_summary
from emofusion.faces.tracker import SubjectTracker
from emofusion.io import atomic_path
from emofusion.log import logger, progress
from emofusion.video import VideoStream

__all__ = ["FaceAligner", "FaceSettings", "extract_faces", "faces_from_crops"]


class FaceAligner:
    """Detect, choose and align the subject's face in batches of frames of one clip (keeps the tracker state)."""

    def __init__(self, settings: FaceSettings, *, width: int, height: int, side: str | None, device):
        import torch

        self.settings = settings
        self.device = torch.device(device)
        self.detector = MTCNNDetector(min_face_size=settings.min_face_size, thresholds=settings.thresholds,
                                      factor=settings.pyramid_factor, max_side=settings.max_side,
                                      detect_every=settings.detect_every, device=self.device)
        self.tracker = SubjectTracker(side=side, width=width, min_probability=settings.min_probability,
                                      reacquire_after=settings.reacquire_after)
        self.template = face_template(settings.size, settings.margin)

    def __call__(self, frames) -> dict[str, np.ndarray]:
        """``frames (B, 3, H, W)`` uint8 (any device) -> numpy crops, boxes, landmarks, probability, valid."""
        import torch

        frames = frames.to(self.device, non_blocking=True)
        B = frames.shape[0]
        S = self.settings.size
        dets = self.detector(frames)
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
                crops[valid] = warp_faces(frames, m, S, index=sel).cpu().numpy()
        release_freed_memory()
        return {"crops": crops, "boxes": boxes, "landmarks": landmarks, "probability": probability, "valid": valid}


def extract_faces(video: str | Path, out: str | Path, *, clip: str, settings: FaceSettings | None = None,
                  threads: int = 1, provenance: dict[str, Any] | None = None) -> FaceSummary:
    """Detect, track and align the subject's face in every frame of ``video``; write the store to ``out``
    atomically (nothing is left at ``out`` on failure). ``clip`` ending in ``_left``/``_right`` picks that side."""
    import h5py

    from emofusion.corpus import side_of

    settings = settings or FaceSettings()
    started = time.perf_counter()
    device = resolve_device(settings.device)
    stream = VideoStream(video, batch_size=settings.batch_size, threads=threads, prefetch=device.type == "cuda")
    info = stream.info
    side = side_of(clip)
    logger.info("%s: %s, %d frames of %dx%d (%s, %.2f fps avg); MTCNN on %s, batches of %d%s", clip, video,
                stream.frames, info.width, info.height, info.codec, info.fps, device, settings.batch_size,
                f"; subject on the {side}" if side else "")
    aligner = FaceAligner(settings, width=info.width, height=info.height, side=side, device=device)
    provenance = {**(provenance or {}), "detector": {"name": "mtcnn", "package": "facenet-pytorch",
                                                     "weights_sha256": mtcnn_weights(), "device": str(device)}}
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = create_store(f, stream.frames, settings.size, settings.batch_size)
            for batch in progress(stream, total=stream.batches, desc=f"faces {clip}", unit="batch"):
                res = aligner(batch.frames)
                sl = slice(batch.start, batch.start + len(batch.timestamps))
                for name, value in res.items():
                    ds[name][sl] = value
                ds["timestamps"][sl] = batch.timestamps
                del batch, res  # the next batch is decoded before the loop rebinds these: hold one, not two
            summary = finish_store(f, ds, clip=clip, video=str(video), source="mtcnn", settings=settings,
                                    width=info.width, height=info.height, provenance=provenance, started=started)
    log_summary(summary, video)
    return summary
