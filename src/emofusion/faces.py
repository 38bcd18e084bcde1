"""Face stage: the subject's aligned face in every frame of a clip, one HDF5 store per clip.

Two sources give the same store:

* ``mtcnn``: the video is decoded once as a stream, ``faces.batch_size`` frames at a time
  (:mod:`emofusion.video`); MTCNN (facenet-pytorch's P/R/O-nets and weights) runs on the whole batch on the
  configured device (:class:`MTCNNDetector`: the candidate crops of its second and third stages come from one
  gather over an image pyramid instead of a Python loop per candidate; optionally the P-net only on every
  ``faces.detect_every``-th frame); a tracker picks the subject's face in each frame; one batched closed-form
  similarity transform (least squares from the 5 landmarks to the ArcFace template) and one ``grid_sample`` per
  chunk cut the aligned crops. Memory is bounded by the batch, whatever the video's length.
* ``cropped_aligned``: corpora that ship aligned crops (Aff-Wild2 ``cropped_aligned/<clip>/%05d.jpg``, number =
  frame + 1, a missing image = no face). No detection; images are resized to ``faces.size`` if needed.

Subject choice (:class:`SubjectTracker`): candidates are faces with probability >= ``faces.min_probability``;
for ``<video>_left`` / ``<video>_right`` clips only faces whose centre lies in that half of the frame. The first
choice, and any choice after ``faces.reacquire_after`` frames without the subject, is the largest candidate;
otherwise the candidate that overlaps the last chosen box (IoU >= 0.3) or, failing that, whose centre is within half
a face of it (one more half per frame it has been missing) at a similar size. A frame where the tracked subject is
not found is invalid even if someone else is visible, so the choice never jumps to another person within a track.

Store layout (``results/faces/<clip>.h5``), one row per decoded frame (the timeline contract)::

    crops        (N, S, S, 3) uint8   RGB, aligned; zeros where not valid
    boxes        (N, 4) float32       x1, y1, x2, y2 in frame pixels, MTCNN's convention (facenet-pytorch's detect);
                                      NaN where unknown (no face, or crops source)
    landmarks    (N, 5, 2) float32    eyes, nose, mouth corners (x, y) in frame pixels; NaN where unknown
    probability  (N,) float32         MTCNN probability of the chosen face; 0 = no face; NaN for crops source
    valid        (N,) bool            a face crop is present (detected, shipped, or filled)
    filled       (N,) bool            copied from the nearest valid frame (faces.fill_gaps); a subset of valid
    timestamps   (N,) float64         frame presentation time in seconds (the decoder's pts)

Root attributes: ``schema_version``, ``clip``, ``video``, ``source`` (``mtcnn`` | ``cropped_aligned``), ``size``,
``template`` (5, 2), ``frames``, ``valid_frames``, ``detected_frames``, ``filled_frames``, ``width``, ``height``,
``timestamps_backwards`` (steps where ``timestamps[i] < timestamps[i - 1]``: frames stay in decode order, but an
edited or concatenated file whose timestamps jump back has times that are not trustworthy; logged as a warning;
the ``cropped_aligned`` source stores the demuxer's sorted times, so 0 there), ``provenance`` (JSON: versions,
git revision, config and its hash, for ``mtcnn`` also the detector's weight checksums and device).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.device import resolve_device
from emofusion.errors import ConfigError, InputError
from emofusion.log import logger, progress

SCHEMA_VERSION = 1
DATASETS = ("crops", "boxes", "landmarks", "probability", "valid", "filled", "timestamps")

# ArcFace (insightface) 112x112 five-point template in pixel-index coordinates: left eye, right eye, nose tip,
# left mouth corner, right mouth corner (left/right as seen in the image).
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], dtype=np.float64)

# Float elements (64 MB) converted from uint8 frames at once when resizing or warping full frames.
_FLOAT_BUDGET = 1 << 24
_MAX_SUPERSAMPLE = 4
_CROP_SAMPLES = 1 << 19  # candidate crop pixels gathered per R-/O-net pass (bounds memory on crowded frames)
_CANDIDATE_BUCKET = 32  # candidate counts are rounded up to a multiple of this
_CPU_DETECT_CHUNK = 8  # frames per MTCNN pass on a CPU
_TRACK_IOU = 0.3
_TRACK_DISTANCE = 0.5  # centre distance, in face sizes, still accepted as the same face
_TRACK_SCALE = 2.0  # largest size ratio between the tracked face and a candidate


@dataclass(frozen=True)
class FaceSettings:
    """The ``faces:`` config section (see src/emofusion/schemas/config.schema.yaml for meanings and defaults)."""

    size: int = 112
    margin: float = 0.0
    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    pyramid_factor: float = 0.709
    min_probability: float = 0.9
    max_side: int | None = 640
    detect_every: int = 1
    reacquire_after: int = 15
    batch_size: int = 32
    device: str = "auto"
    fill_gaps: int = 0

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> FaceSettings:
        """Settings from a validated ``config["faces"]`` (unknown keys were rejected by the schema)."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        extra = sorted(set(section) - known)
        if extra:
            raise ConfigError(f"faces: unknown key(s) {', '.join(extra)}; see src/emofusion/schemas/config.schema.yaml")
        if "thresholds" in section:
            section["thresholds"] = tuple(float(t) for t in section["thresholds"])
            if len(section["thresholds"]) != 3:
                raise ConfigError("faces.thresholds: give three MTCNN thresholds (P-, R-, O-net), e.g. [0.6, 0.7, 0.7]")
        return cls(**section)


@dataclass(frozen=True)
class FaceSummary:
    """Counts of one written store."""

    clip: str
    source: str
    frames: int
    valid: int
    detected: int
    filled: int
    seconds: float

    @property
    def invalid(self) -> int:
        return self.frames - self.valid


def face_template(size: int = 112, margin: float = 0.0) -> np.ndarray:
    """The five-point target of the alignment for a ``size`` crop: ArcFace 112 scaled, shrunk by ``1 + margin``
    about the crop centre to keep more context around the face. ``(5, 2)`` float64, pixel-index coordinates."""
    if size < 16:
        raise ConfigError(f"faces.size = {size} is too small for a face crop; use at least 16 (112 is standard)")
    if margin < 0:
        raise ConfigError(f"faces.margin = {margin} must be >= 0")
    centre = (size - 1) / 2.0
    scaled = (ARCFACE_112 + 0.5) * (size / 112.0) - 0.5  # pixel centres stay pixel centres
    return (scaled - centre) / (1.0 + margin) + centre


# --------------------------------------------------------------------------------------------- detection (MTCNN)


@dataclass(frozen=True)
class Detections:
    """All faces found in a batch of frames, in frame pixel coordinates, sorted by frame.

    ``frame (K,)`` int64 index in the batch, ``boxes (K, 4)`` float32, ``points (K, 5, 2)`` float32,
    ``probs (K,)`` float32. ``offsets (B + 1,)``: faces of frame b are rows ``offsets[b]:offsets[b + 1]``.
    """

    frame: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    probs: np.ndarray
    offsets: np.ndarray


@functools.cache
def mtcnn_weights() -> dict[str, str]:
    """SHA-256 of the P-, R- and O-net weight files that ship in the facenet-pytorch wheel (for provenance)."""
    import facenet_pytorch

    from emofusion.provenance import file_sha256

    data = Path(facenet_pytorch.__file__).parent / "data"
    return {f"{name}.pt": file_sha256(data / f"{name}.pt") for name in ("pnet", "rnet", "onet")}


class MTCNNDetector:
    """MTCNN (facenet-pytorch's networks and shipped weights) run on whole batches of frames.

    The three stages, thresholds and box arithmetic of ``facenet_pytorch.MTCNN.detect``, vectorised over the
    batch: frames are first resized so their longer side is at most ``max_side``; the P-net runs on each
    pyramid level of all frames at once; the 24x24 / 48x48 candidate crops of the R- and O-net stages are
    bilinear samples taken from the pyramid level whose resolution matches the crop (so large faces do not alias,
    as with facenet-pytorch's area resize), all candidates in one gather, with black outside the frame as in the
    original MTCNN, instead of a Python loop per candidate. Boxes and landmarks are returned in frame pixels.

    With ``detect_every = k > 1`` only every k-th frame of the stream (counted across calls: one detector per
    clip) gets the P-net pass, the costly part; the frames in between get candidate boxes around the faces found
    in the last such key frame (shifted and scaled a little) and go through the R- and O-nets, which re-locate
    them. A face that appears between two key frames is found at the next one.
    """

    def __init__(self, *, min_face_size: int = 20, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709,
                 max_side: int | None = None, detect_every: int = 1, device="cpu"):
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        if detect_every < 1:
            raise ConfigError(f"faces.detect_every = {detect_every} must be >= 1")
        self.device = torch.device(device)
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.max_side = int(max_side) if max_side else None
        self.detect_every = int(detect_every)
        self._seen = 0  # frames seen so far (key frames are multiples of detect_every)
        self._carry = None  # (n, 5) faces of the last key frame, detection pixels, for the next call
        self._carry_frame = 0  # that key frame's index in the stream
        self._warned_min = False
        # channels-last convolutions are 2-4x faster on CPU and fine on CUDA; the pyramid is kept channels-last
        # too, so a level is also an (N*h*w, 3) pixel table for the crop gather without a copy.
        self.pnet = PNet().to(self.device, memory_format=torch.channels_last).eval()
        self.rnet = RNet().to(self.device, memory_format=torch.channels_last).eval()
        self.onet = ONet().to(self.device, memory_format=torch.channels_last).eval()

    def detection_size(self, height: int, width: int) -> tuple[int, int, float]:
        """(h, w, scale) of the image MTCNN sees for a ``height x width`` frame."""
        scale = 1.0
        if self.max_side and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale)), scale

    def __call__(self, frames) -> Detections:
        """Detect faces in ``frames (B, 3, H, W)`` uint8 on the detector's device (the next B frames of the
        stream when ``detect_every > 1``)."""
        import torch

        B, _, H, W = frames.shape
        h, w, scale = self.detection_size(H, W)
        min_size = self.min_face_size * scale
        if min_size < 12:
            if not self._warned_min:
                logger.info("detecting on %dx%d frames (faces.max_side): faces smaller than %.0f px in the %dx%d "
                            "video are not found", w, h, 12 / scale, W, H)
                self._warned_min = True
            min_size = 12.0
        # On a CPU, chunks of a few frames keep the pyramid and activations in cache (B = 32 at once is 30-50%
        # slower per frame than B = 4..8); a GPU takes the whole batch.
        step = B if self.device.type == "cuda" else _CPU_DETECT_CHUNK
        parts = []
        with torch.inference_mode():
            for i in range(0, B, step):
                images = resize_frames(frames[i:i + step], h, w)  # (b, 3, h, w) uint8
                key = None
                if self.detect_every > 1:
                    key = (self._seen + np.arange(len(images))) % self.detect_every == 0
                frame, boxes, points = self._detect(images, min_size, key)
                self._seen += len(images)
                parts.append((frame + i, boxes, points))
        frame = np.concatenate([p[0] for p in parts])
        boxes = np.concatenate([p[1] for p in parts])
        points = np.concatenate([p[2] for p in parts])
        # Detection pixels -> frame pixels (pixel centres map to pixel centres). Landmarks are 0-based pixel
        # positions; boxes keep MTCNN's own convention (1-based corners, as facenet-pytorch's detect returns them).
        sx, sy = W / w, H / h
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] + 0.5) * sx - 0.5
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] + 0.5) * sy - 0.5
        points[:, :, 0] = (points[:, :, 0] + 0.5) * sx - 0.5
        points[:, :, 1] = (points[:, :, 1] + 0.5) * sy - 0.5
        order = np.argsort(frame, kind="stable")
        frame, boxes, points = frame[order], boxes[order], points[order]
        offsets = np.searchsorted(frame, np.arange(B + 1), side="left")
        return Detections(frame=frame, boxes=boxes[:, :4].astype(np.float32), points=points.astype(np.float32),
                          probs=boxes[:, 4].astype(np.float32), offsets=offsets)

    def _detect(self, images, minsize: float, key: np.ndarray | None = None):
        """MTCNN on ``images (b, 3, h, w)`` uint8: the P-net on the frames where ``key`` is true (all when None),
        candidates around the last key frame's faces on the others, then the R- and O-nets on all candidates.
        Returns numpy frame index (K,), boxes (K, 5) with the score last, points (K, 5, 2), detection pixels."""
        import torch

        h, w = images.shape[2:]
        m = 12.0 / minsize
        minl = min(h, w) * m
        scales = []
        while minl >= 12:
            scales.append(m)
            m *= self.factor
            minl *= self.factor
        pyramid = _Pyramid(images, [(int(h * s + 1), int(w * s + 1)) for s in scales])
        if key is None:
            return _to_numpy(*self._refine(pyramid, *self._propose(pyramid, scales, None)))
        key_idx = np.flatnonzero(key)
        found = self._refine(pyramid, *self._propose(pyramid, scales, key_idx)) if len(key_idx) else None
        # Every other frame takes the faces of the last key frame at or before it (or of the previous call's).
        sources, source_frame = [], []
        if self._carry is not None and len(self._carry):
            sources.append(self._carry)
            source_frame.append(torch.full((len(self._carry),), -1, dtype=torch.long, device=self._carry.device))
        if found is not None and len(found[1]):
            sources.append(found[1])
            source_frame.append(found[0])
        carry_age = self._seen - self._carry_frame  # frames from the carried key frame to this chunk's first
        if len(key_idx):  # the faces of this chunk's last key frame carry over to the next chunk
            last = int(key_idx[-1])
            self._carry = found[1][found[0] == last] if found is not None else None
            self._carry_frame = self._seen + last
        others = np.flatnonzero(~key)
        if not sources or len(others) == 0:
            return _to_numpy(*found) if found is not None else _EMPTY
        src_boxes = torch.cat(sources)
        src_frame = torch.cat(source_frame).cpu().numpy()
        # The key frame each other frame follows: the last key index <= it, else -1 (the carried faces).
        last_key = np.maximum.accumulate(np.where(key, np.arange(len(key)), -1))[others]
        pair_other, pair_src = np.nonzero(last_key[:, None] == src_frame[None, :])
        if len(pair_src) == 0:
            return _to_numpy(*found) if found is not None else _EMPTY
        frames_on = others[pair_other]  # chunk index of each (frame, source face) pair
        keys_of = last_key[pair_other]
        age = np.where(keys_of >= 0, frames_on - keys_of, frames_on + carry_age)  # frames since the key frame
        dev = src_boxes.device
        boxes, inds = _jittered(src_boxes[torch.as_tensor(pair_src, device=dev)],
                                torch.as_tensor(frames_on, device=dev), torch.as_tensor(age, device=dev))
        groups = torch.arange(len(pair_src), device=dev).repeat_interleave(len(boxes) // len(pair_src))
        tracked = self._refine(pyramid, boxes, inds, groups)
        if found is None:
            return _to_numpy(*tracked)
        return _to_numpy(*(torch.cat([a, b]) for a, b in zip(found, tracked, strict=True)))

    def _propose(self, pyramid: _Pyramid, scales: list[float], idx: np.ndarray | None):
        """Stage 1: P-net over the pyramid levels of frames ``idx`` (all when None); square candidate boxes
        (K, 5) and their frame indices (K,)."""
        import torch
        from facenet_pytorch.models.utils.detect_face import generateBoundingBox, rerec
        from torchvision.ops import batched_nms

        sel = None if idx is None else torch.as_tensor(idx, device=pyramid.table.device)
        all_boxes, all_inds = [], []
        for level, s in zip(pyramid.levels[1:], scales, strict=True):
            if sel is not None:
                level = level.index_select(0, sel).contiguous(memory_format=torch.channels_last)
            reg, probs = self.pnet(level)
            boxes_s, inds_s = generateBoundingBox(reg, probs[:, 1], s, self.thresholds[0])
            if sel is not None:
                inds_s = sel[inds_s]
            pick = batched_nms(boxes_s[:, :4], boxes_s[:, 4], inds_s, 0.5)
            all_boxes.append(boxes_s[pick])
            all_inds.append(inds_s[pick])
        if not all_boxes:
            dev = pyramid.table.device
            return torch.zeros((0, 5), device=dev), torch.zeros(0, dtype=torch.long, device=dev)
        boxes = torch.cat(all_boxes)
        inds = torch.cat(all_inds)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
        boxes, inds = boxes[pick], inds[pick]
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                             boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]], dim=1)
        return rerec(boxes), inds

    def _refine(self, pyramid: _Pyramid, boxes, inds, groups=None):
        """Stages 2 and 3 on candidate boxes (K, >=4) of frames ``inds``: R-net (score, regression, NMS), then
        O-net (score, regression, landmarks, NMS). Returns tensors frame (K,), boxes (K, 5), points (K, 5, 2).

        ``groups (K,)``: candidates proposed around one known face; only the best-scoring one of each group goes
        on to the O-net (instead of the R-net's NMS, which would keep many of the overlapping proposals)."""
        import torch
        from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, rerec
        from torchvision.ops import batched_nms

        dev = pyramid.table.device
        none = (torch.zeros(0, dtype=torch.long, device=dev), torch.zeros((0, 5), device=dev),
                torch.zeros((0, 5, 2), device=dev))
        # Stage 2: R-net on 24x24 crops of every candidate.
        ok = _nonempty(boxes)
        boxes, inds = boxes[ok], inds[ok]
        if groups is not None:
            groups = groups[ok]
        if len(boxes) == 0:
            return none
        reg, score = _run_on_crops(self.rnet, pyramid, boxes, inds, 24)
        score = score[:, 1]
        ipass = score > self.thresholds[1]
        boxes = torch.cat([boxes[ipass, :4], score[ipass, None]], dim=1)
        inds, reg = inds[ipass], reg[ipass]
        if groups is None:
            pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
        else:
            pick = _best_per_group(groups[ipass], boxes[:, 4])
        boxes, inds, reg = boxes[pick], inds[pick], reg[pick]
        boxes = rerec(bbreg(boxes, reg))

        # Stage 3: O-net on 48x48 crops: final boxes, scores and the five landmarks.
        ok = _nonempty(boxes)
        boxes, inds = boxes[ok], inds[ok]
        if len(boxes) == 0:
            return none
        reg, lms, score = _run_on_crops(self.onet, pyramid, boxes, inds, 48)
        score = score[:, 1]
        ipass = score > self.thresholds[2]
        boxes = torch.cat([boxes[ipass, :4], score[ipass, None]], dim=1)
        inds, reg, lms = inds[ipass], reg[ipass], lms[ipass]
        if len(boxes) == 0:
            return none
        bw = boxes[:, 2] - boxes[:, 0] + 1
        bh = boxes[:, 3] - boxes[:, 1] + 1
        px = bw[:, None] * lms[:, :5] + boxes[:, 0:1] - 1
        py = bh[:, None] * lms[:, 5:10] + boxes[:, 1:2] - 1
        points = torch.stack([px, py], dim=2)  # (K, 5, 2)
        boxes = bbreg(boxes, reg)
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], inds, 0.7, "Min")
        return inds[pick], boxes[pick], points[pick]


_EMPTY = (np.zeros(0, np.int64), np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32))
# Candidates around a known face for the frames between key frames: its centre moved by up to 0.3 of its size
# per frame since the key frame, either way (5 x 5 positions), and its size scaled by 1/1.15 .. 1.15: 75 boxes,
# cheap for the R-net, whose regression then centres the box on the face.
_JITTER_SHIFTS = (-0.3, -0.15, 0.0, 0.15, 0.3)
_JITTER_SCALES = (1 / 1.15, 1.0, 1.15)


def _best_per_group(groups, scores):
    """Index of the highest score in each group (groups: (K,) integer ids)."""
    import torch

    if len(groups) == 0:
        return torch.zeros(0, dtype=torch.long, device=groups.device)
    order = torch.argsort(scores, descending=True)
    order = order[torch.argsort(groups[order], stable=True)]  # by group, best first within each
    g = groups[order]
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    return order[first]


def _to_numpy(inds, boxes, points):
    return (inds.cpu().numpy().astype(np.int64), boxes.float().cpu().numpy(), points.float().cpu().numpy())


def _jittered(boxes, inds, age):
    """Square candidates (K * 75, 5) around ``boxes (K, >=4)`` (see _JITTER_*, shifts times ``age (K,)``, the
    frames since the boxes were found), for frames ``inds (K,)``."""
    import torch

    dev = boxes.device
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    size = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    dx, dy, sc = torch.meshgrid(torch.tensor(_JITTER_SHIFTS, device=dev), torch.tensor(_JITTER_SHIFTS, device=dev),
                                torch.tensor(_JITTER_SCALES, device=dev), indexing="ij")
    dx, dy, sc = dx.reshape(-1), dy.reshape(-1), sc.reshape(-1)  # (J,)
    reach = (size * age.clamp_min(1).to(size.dtype))[:, None]  # (K, 1)
    ncx = cx[:, None] + dx[None] * reach  # (K, J)
    ncy = cy[:, None] + dy[None] * reach
    half = sc[None] * size[:, None] / 2
    out = torch.stack([ncx - half, ncy - half, ncx + half, ncy + half, torch.zeros_like(ncx)], dim=2)
    return out.reshape(-1, 5), inds.repeat_interleave(len(dx))


_BLACK = (0.0 - 127.5) * 0.0078125  # a black pixel after MTCNN's normalisation


class _Pyramid:
    """The detection images and their downscaled levels, normalised for MTCNN, channels-last.

    ``levels[0]`` is the detection image itself; ``levels[1:]`` are the P-net pyramid. All levels share one
    ``(pixels, 3)`` table so candidate crops of any size are sampled by one gather."""

    def __init__(self, images, sizes: list[tuple[int, int]]):
        import torch

        B, _, h, w = images.shape
        self.h, self.w = h, w
        dev = images.device
        shapes = [(h, w), *sizes]
        hs = torch.tensor([hl for hl, _ in shapes], device=dev)
        ws = torch.tensor([wl for _, wl in shapes], device=dev)
        counts = B * hs * ws
        self.hs, self.ws = hs, ws
        self.ratio = ws.double() / w  # level pixels per detection pixel, decreasing
        self.offset = torch.cumsum(counts, 0) - counts
        self.table = torch.empty((int(counts.sum()), 3), dtype=torch.float32, device=dev)  # (pixels, 3)
        self.levels = []  # (B, 3, hl, wl) channels-last views into the table
        for (hl, wl), off, n in zip(shapes, self.offset.tolist(), counts.tolist(), strict=True):
            level = self.table[off:off + n].view(B, hl, wl, 3).permute(0, 3, 1, 2)
            src = images if (hl, wl) == (h, w) and off == 0 else _resize_u8(images, hl, wl)
            level.copy_(src).sub_(127.5).mul_(0.0078125)
            self.levels.append(level)

    def crop(self, boxes, inds, size: int):
        """``size x size`` samples of the pixels ``trunc(x1) - 1 .. trunc(x2) - 1`` (facenet-pytorch's crop) of
        each candidate ``boxes (K, >=4)`` in frame ``inds (K,)``, from the coarsest level that is still at least
        as fine as the crop needs; black outside the frame. Returns ``(K, 3, size, size)`` float normalised."""
        import torch

        t = boxes[:, :4].trunc().double()
        x1, y1, x2, y2 = t[:, 0] - 1, t[:, 1] - 1, t[:, 2], t[:, 3]  # pixel edges, detection image
        need = size / torch.maximum(x2 - x1, y2 - y1).clamp_min(1.0)
        lvl = ((self.ratio[None, :] >= need[:, None]).sum(dim=1) - 1).clamp_min(0)  # (K,)
        rx = self.ws[lvl].double() / self.w
        ry = self.hs[lvl].double() / self.h
        j = (torch.arange(size, device=boxes.device, dtype=torch.float64) + 0.5) / size
        xs = (x1[:, None] + j[None] * (x2 - x1)[:, None]) * rx[:, None] - 0.5  # (K, size) level pixel coords
        ys = (y1[:, None] + j[None] * (y2 - y1)[:, None]) * ry[:, None] - 0.5
        x0, y0 = xs.floor(), ys.floor()
        fx, fy = (xs - x0).float(), (ys - y0).float()
        x0, y0 = x0.long(), y0.long()
        hl, wl = self.hs[lvl][:, None, None], self.ws[lvl][:, None, None]
        base = self.offset[lvl][:, None, None] + inds.long()[:, None, None] * hl * wl

        def at(yy, xx):  # yy (K, size, 1), xx (K, 1, size) -> (K, size, size, 3)
            inside = (xx >= 0) & (xx < wl) & (yy >= 0) & (yy < hl)
            idx = base + yy.clamp(min=0).minimum(hl - 1) * wl + xx.clamp(min=0).minimum(wl - 1)
            return torch.where(inside[..., None], self.table[idx], _BLACK)

        ya, xa = y0[:, :, None], x0[:, None, :]
        wx, wy = fx[:, None, :, None], fy[:, :, None, None]
        top = at(ya, xa) * (1 - wx) + at(ya, xa + 1) * wx
        bottom = at(ya + 1, xa) * (1 - wx) + at(ya + 1, xa + 1) * wx
        return (top * (1 - wy) + bottom * wy).permute(0, 3, 1, 2)  # (K, 3, size, size), channels-last


def _nonempty(boxes):
    """Mask of the candidates with at least one pixel inside (degenerate ones cannot be sampled by the crop stages)."""
    return (boxes[:, 2].trunc() > boxes[:, 0].trunc() - 1) & (boxes[:, 3].trunc() > boxes[:, 1].trunc() - 1)


def _run_on_crops(net, pyramid: _Pyramid, boxes, inds, size: int):
    """``net`` on the ``size x size`` crops of all candidates, in chunks of a fixed number of candidates (bounded
    memory on crowded frames; counts rounded up to a multiple of ``_CANDIDATE_BUCKET`` so oneDNN / cuDNN see few
    distinct shapes)."""
    import torch

    chunk = max(_CANDIDATE_BUCKET, _CROP_SAMPLES // (size * size) // _CANDIDATE_BUCKET * _CANDIDATE_BUCKET)
    outs = []
    for i in range(0, len(boxes), chunk):
        crops = pyramid.crop(boxes[i:i + chunk], inds[i:i + chunk], size)
        k = crops.shape[0]
        padded = -(-k // _CANDIDATE_BUCKET) * _CANDIDATE_BUCKET
        if padded > k:
            crops = torch.cat([crops, crops.new_zeros((padded - k, *crops.shape[1:]))])
        outs.append(tuple(o[:k] for o in net(crops.contiguous(memory_format=torch.channels_last))))
    return tuple(torch.cat(v, dim=0) for v in zip(*outs, strict=True))


def _resize_u8(images, h: int, w: int):
    """Antialiased bilinear resize of uint8 ``(B, 3, H, W)`` to ``(B, 3, h, w)`` uint8. On CPU torch's uint8
    channels-last kernel (several times faster than float); on CUDA in float, rounded, so both agree."""
    import torch
    from torch.nn.functional import interpolate

    if images.device.type == "cpu":
        return interpolate(images.contiguous(memory_format=torch.channels_last), size=(h, w), mode="bilinear",
                           antialias=True, align_corners=False)
    out = interpolate(images.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def resize_frames(frames, h: int, w: int):
    """``frames (B, 3, H, W)`` uint8 -> ``(B, 3, h, w)`` uint8 (antialiased), a chunk of frames at a time so
    no full-resolution float copy of the whole batch is made."""
    import torch

    B, C, H, W = frames.shape
    if (H, W) == (h, w):
        return frames
    out = torch.empty((B, C, h, w), dtype=torch.uint8, device=frames.device)
    step = max(1, _FLOAT_BUDGET // (C * H * W))
    for i in range(0, B, step):
        out[i:i + step] = _resize_u8(frames[i:i + step], h, w)
    return out


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to do
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Hand memory freed by the last batch back to the OS (glibc ``malloc_trim``).

    Tensor sizes vary from batch to batch (candidate counts, faces per batch); glibc then keeps the freed blocks
    in its heap and the resident size creeps up with the length of the video (measured: +1 GB over a few hundred
    batches). Trimming after each batch keeps the peak bounded by one batch. A few milliseconds per batch."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# ------------------------------------------------------------------------------------------------ subject choice


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` box with ``(k, 4)`` boxes."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


class SubjectTracker:
    """Chooses the subject's face frame after frame (rules in the module docstring). State carries across
    batches, so one tracker follows a whole clip."""

    def __init__(self, *, side: str | None, width: int, min_probability: float = 0.9, reacquire_after: int = 15):
        if side not in (None, "left", "right"):
            raise ValueError(f"side must be None, 'left' or 'right', not {side!r}")
        self.side = side
        self.width = float(width)
        self.min_probability = float(min_probability)
        self.reacquire_after = int(reacquire_after)
        self.last: np.ndarray | None = None
        self.missed = 0

    def choose(self, boxes: np.ndarray, probs: np.ndarray) -> int:
        """Index of the subject's face among ``boxes (k, 4)`` of one frame, or -1 when it is not there."""
        keep = probs >= self.min_probability
        if self.side is not None and len(boxes):
            cx = (boxes[:, 0] + boxes[:, 2]) / 2
            keep &= (cx < self.width / 2) if self.side == "left" else (cx >= self.width / 2)
        idx = np.flatnonzero(keep)
        choice = -1
        if len(idx):
            cand = boxes[idx]
            areas = (cand[:, 2] - cand[:, 0]) * (cand[:, 3] - cand[:, 1])
            if self.last is None or self.missed >= self.reacquire_after:
                choice = int(idx[np.argmax(areas)])
            else:
                choice = self._match(self.last, cand, areas, idx)
        if choice >= 0:
            self.last = boxes[choice].astype(np.float64)
            self.missed = 0
        else:
            self.missed += 1
        return choice

    def _match(self, last: np.ndarray, cand: np.ndarray, areas: np.ndarray, idx: np.ndarray) -> int:
        iou = box_iou(last, cand)
        j = int(np.argmax(iou))
        if iou[j] >= _TRACK_IOU:
            return int(idx[j])
        last_size = max(last[2] - last[0], last[3] - last[1], 1.0)
        last_area = max((last[2] - last[0]) * (last[3] - last[1]), 1.0)
        dist = np.hypot((cand[:, 0] + cand[:, 2] - last[0] - last[2]) / 2,
                        (cand[:, 1] + cand[:, 3] - last[1] - last[3]) / 2) / last_size
        ratio = np.sqrt(np.maximum(areas, 1e-9) / last_area)
        reach = _TRACK_DISTANCE * (1 + self.missed)  # a face lost for a few frames may have moved further
        ok = (dist <= reach) & (ratio <= _TRACK_SCALE) & (ratio >= 1 / _TRACK_SCALE)
        if not ok.any():
            return -1
        return int(idx[np.argmin(np.where(ok, dist, np.inf))])


# ------------------------------------------------------------------------------------------------------ alignment


def similarity_transforms(src, dst):
    """Least-squares similarity transforms (rotation, uniform scale, translation; no reflection) taking each set
    of points ``src (B, P, 2)`` onto ``dst (P, 2)``, in closed form for the whole batch. Returns ``(B, 2, 3)``
    matrices ``[[a, -b, tx], [b, a, ty]]`` with ``dst ~ M @ [x, y, 1]``."""
    import torch

    src = torch.as_tensor(src, dtype=torch.float64)
    dst = torch.as_tensor(dst, dtype=torch.float64, device=src.device)
    src_mean = src.mean(dim=1, keepdim=True)  # (B, 1, 2)
    dst_mean = dst.mean(dim=0)  # (2,)
    p = src - src_mean
    q = dst - dst_mean
    norm = (p ** 2).sum(dim=(1, 2)).clamp_min(1e-12)
    a = (p[..., 0] * q[:, 0] + p[..., 1] * q[:, 1]).sum(dim=1) / norm
    b = (p[..., 0] * q[:, 1] - p[..., 1] * q[:, 0]).sum(dim=1) / norm
    mx, my = src_mean[:, 0, 0], src_mean[:, 0, 1]
    tx = dst_mean[0] - (a * mx - b * my)
    ty = dst_mean[1] - (b * mx + a * my)
    return torch.stack([torch.stack([a, -b, tx], dim=1), torch.stack([b, a, ty], dim=1)], dim=1)


def warp_faces(frames, transforms, size: int, index=None):
    """Aligned ``size x size`` crops of ``frames (B, 3, H, W)`` uint8 under ``transforms (B, 2, 3)`` (frame pixels
    -> crop pixels); with ``index (K,)`` only of those frames (``transforms (K, 2, 3)``), without copying the rest.
    ``affine_grid`` + ``grid_sample`` a chunk of frames at a time; when the face is larger than the crop (the warp
    shrinks it), each crop pixel averages ceil(1 / scale) x ceil(1 / scale) samples (at most 4 x 4) so it does not
    alias. Returns ``(K, S, S, 3)``
    uint8 on the frames' device; zeros where the crop leaves the frame."""
    import torch
    from torch.nn.functional import affine_grid, avg_pool2d, grid_sample

    _, C, H, W = frames.shape
    if index is None:
        index = torch.arange(frames.shape[0], device=frames.device)
    B = len(index)
    if B == 0:
        return torch.zeros((0, size, size, C), dtype=torch.uint8, device=frames.device)
    m = transforms.to(device=frames.device, dtype=torch.float64)
    a, b, tx, ty = m[:, 0, 0], m[:, 1, 0], m[:, 0, 2], m[:, 1, 2]
    det = a * a + b * b  # squared scale (crop pixels per frame pixel)
    ss = int(min(_MAX_SUPERSAMPLE, max(1, np.ceil(1.0 / max(float(det.sqrt().min()), 1e-6)))))
    # theta maps normalised crop coordinates to normalised frame coordinates (align_corners=False):
    # crop normalised -> crop pixels -> (inverse similarity) frame pixels -> frame normalised.
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    inverse = torch.stack([torch.stack([a, b, -(a * tx + b * ty)], 1) / det[:, None],
                           torch.stack([-b, a, b * tx - a * ty], 1) / det[:, None],
                           torch.stack([zero, zero, one], 1)], 1)  # (B, 3, 3)
    k = size / 2.0
    from_crop = torch.tensor([[k, 0, k - 0.5], [0, k, k - 0.5], [0, 0, 1]], dtype=torch.float64, device=m.device)
    to_frame = torch.tensor([[2 / W, 0, 1 / W - 1], [0, 2 / H, 1 / H - 1], [0, 0, 1]], dtype=torch.float64,
                            device=m.device)
    theta = (to_frame @ inverse @ from_crop)[:, :2].float()  # (B, 2, 3)
    n = size * ss
    out = torch.empty((B, size, size, C), dtype=torch.uint8, device=frames.device)
    step = max(1, _FLOAT_BUDGET // (C * max(H * W, n * n)))
    if frames.device.type == "cpu":
        step = min(step, _CPU_DETECT_CHUNK)  # cache-sized chunks, as in detection
    for i in range(0, B, step):
        chunk = frames.index_select(0, index[i:i + step])
        grid = affine_grid(theta[i:i + step], [chunk.shape[0], C, n, n], align_corners=False)  # (b, n, n, 2)
        crop = grid_sample(chunk.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if ss > 1:
            crop = avg_pool2d(crop, ss)
        out[i:i + step] = crop.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


def transform_points(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``(B, 2, 3)`` transforms to ``(B, P, 2)`` points."""
    t = np.asarray(transforms, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return np.einsum("bij,bpj->bpi", t[:, :, :2], p) + t[:, None, :, 2]


# -------------------------------------------------------------------------------------------------------- the store


def _create_store(f, n: int, size: int, batch: int) -> dict[str, Any]:
    """Preallocated datasets of a store with ``n`` frames (crops gzip-1: portable to any HDF5 reader, about 30%
    smaller, and far faster than detection). Crops are chunked by the writer's ``batch`` of frames, so each batch
    writes whole chunks, each compressed once (a chunk spanning two batches is read back and compressed again)."""
    chunk = max(1, min(n, batch))
    nan = np.float32("nan")
    ds = {
        "crops": f.create_dataset("crops", shape=(n, size, size, 3), dtype=np.uint8,
                                  chunks=(chunk, size, size, 3), compression="gzip", compression_opts=1,
                                  fillvalue=0),
        "boxes": f.create_dataset("boxes", shape=(n, 4), dtype=np.float32, fillvalue=nan),
        "landmarks": f.create_dataset("landmarks", shape=(n, 5, 2), dtype=np.float32, fillvalue=nan),
        "probability": f.create_dataset("probability", shape=(n,), dtype=np.float32, fillvalue=0.0),
        "valid": f.create_dataset("valid", shape=(n,), dtype=bool, fillvalue=False),
        "filled": f.create_dataset("filled", shape=(n,), dtype=bool, fillvalue=False),
        "timestamps": f.create_dataset("timestamps", shape=(n,), dtype=np.float64, fillvalue=nan),
    }
    return ds


def gap_sources(valid: np.ndarray, max_gap: int) -> np.ndarray:
    """For each frame, the index of the valid frame it is filled from, or -1.

    A gap is a run of invalid frames; runs of at most ``max_gap`` frames (including runs at the start or end of
    the clip, which have a valid neighbour on one side only) take each frame from the nearest valid frame
    (the earlier one on a tie). Valid frames and longer runs get -1."""
    valid = np.asarray(valid, dtype=bool)
    n = len(valid)
    src = np.full(n, -1, dtype=np.int64)
    if max_gap <= 0 or n == 0 or not valid.any() or valid.all():
        return src
    idx = np.arange(n)
    prev = np.maximum.accumulate(np.where(valid, idx, -1))
    nxt = np.minimum.accumulate(np.where(valid, idx, n)[::-1])[::-1]
    gap_len = nxt - prev - 1  # length of the run each invalid frame belongs to
    fill = ~valid & (gap_len <= max_gap)
    use_prev = (prev >= 0) & ((nxt >= n) | (idx - prev <= nxt - idx))
    src[fill] = np.where(use_prev, prev, nxt)[fill]
    return src


def _fill_gaps(ds: dict[str, Any], max_gap: int) -> int:
    """Fill short gaps in an open store in place (one slice write per gap side); returns frames filled."""
    valid = ds["valid"][:]
    src = gap_sources(valid, max_gap)
    dst = np.flatnonzero(src >= 0)
    if len(dst) == 0:
        return 0
    for name in ("boxes", "landmarks", "probability"):
        arr = ds[name][:]
        arr[dst] = arr[src[dst]]
        ds[name][:] = arr
    # Crops: runs of consecutive destinations sharing one source are written as one slice.
    breaks = np.flatnonzero((np.diff(dst) != 1) | (np.diff(src[dst]) != 0)) + 1
    for run in np.split(dst, breaks):
        face = ds["crops"][int(src[run[0]])]
        ds["crops"][int(run[0]):int(run[-1]) + 1] = np.broadcast_to(face, (len(run), *face.shape))
    valid[dst] = True
    filled = np.zeros_like(valid)
    filled[dst] = True
    ds["valid"][:] = valid
    ds["filled"][:] = filled
    return len(dst)


def _finish_store(f, ds: dict[str, Any], *, clip: str, video: str, source: str, settings: FaceSettings,
                  width: int, height: int, provenance: dict[str, Any] | None, started: float) -> FaceSummary:
    filled = _fill_gaps(ds, settings.fill_gaps) if settings.fill_gaps > 0 else 0
    backwards = _timestamps_backwards(ds["timestamps"][:], video)
    valid = ds["valid"][:]
    n = len(valid)
    n_valid = int(valid.sum())
    summary = FaceSummary(clip=clip, source=source, frames=n, valid=n_valid, detected=n_valid - filled,
                          filled=filled, seconds=time.perf_counter() - started)
    attrs = {
        "schema_version": SCHEMA_VERSION, "clip": clip, "video": str(video), "source": source,
        "size": settings.size, "template": face_template(settings.size, settings.margin).astype(np.float32),
        "frames": n, "valid_frames": n_valid, "detected_frames": summary.detected, "filled_frames": filled,
        "width": int(width), "height": int(height), "timestamps_backwards": backwards,
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
    }
    f.attrs.update(attrs)
    return summary


def _timestamps_backwards(timestamps: np.ndarray, video: str | Path) -> int:
    """How many steps of ``timestamps`` go back in time; warns once, naming ``video``, when any do."""
    back = np.flatnonzero(np.diff(timestamps) < 0)
    if len(back):
        i = int(back[0]) + 1
        logger.warning("%s: frame timestamps go backwards %d time(s), first at frame %d (%.3f s after %.3f s), as in "
                       "an edited or concatenated file; the frames are kept in decode order, but the file's "
                       "timestamps are not trustworthy (re-encode it, e.g. `ffmpeg -i %s -c:v libx264 out.mp4`)",
                       video, len(back), i, timestamps[i], timestamps[i - 1], video)
    return len(back)


def _log_summary(summary: FaceSummary, video: str | Path) -> None:
    n = max(summary.frames, 1)
    logger.info("%s (%s): %d frames, %d with a face (%.1f%%), %d filled, %d without; %.1f s (%.1f frames/s)",
                summary.clip, summary.source, summary.frames, summary.valid, 100.0 * summary.valid / n,
                summary.filled, summary.invalid, summary.seconds, summary.frames / max(summary.seconds, 1e-9))
    if summary.valid == 0:
        logger.warning("no face in any frame of %s: the store of clip %s is all invalid", video, summary.clip)


# ------------------------------------------------------------------------------------------------------- MTCNN path


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
    from emofusion.io import atomic_path
    from emofusion.video import VideoStream

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
            ds = _create_store(f, stream.frames, settings.size, settings.batch_size)
            for batch in progress(stream, total=stream.batches, desc=f"faces {clip}", unit="batch"):
                res = aligner(batch.frames)
                sl = slice(batch.start, batch.start + len(batch.timestamps))
                for name, value in res.items():
                    ds[name][sl] = value
                ds["timestamps"][sl] = batch.timestamps
                del batch, res  # the next batch is decoded before the loop rebinds these: hold one, not two
            summary = _finish_store(f, ds, clip=clip, video=str(video), source="mtcnn", settings=settings,
                                    width=info.width, height=info.height, provenance=provenance, started=started)
    _log_summary(summary, video)
    return summary


# ---------------------------------------------------------------------------------------------- pre-cropped path

_CROP_NAME = re.compile(r"^(\d+)\.(jpe?g|png)$", re.IGNORECASE)


def list_crops(crops_dir: str | Path) -> dict[int, Path]:
    """Image number -> path for ``%05d.jpg``-style files of a crops folder (other names are ignored, logged)."""
    crops_dir = Path(crops_dir)
    if not crops_dir.is_dir():
        raise InputError(f"crops folder {crops_dir} does not exist; fix corpus.root or the manifest's crops column, "
                         "or set corpus.use_cropped_aligned: false to detect faces instead")
    found: dict[int, Path] = {}
    other = 0
    with os.scandir(crops_dir) as it:
        for entry in it:
            m = _CROP_NAME.match(entry.name)
            if m and entry.is_file():
                k = int(m.group(1))
                if k in found:
                    raise InputError(f"{crops_dir}: two images for frame number {k} ({found[k].name} and "
                                     f"{entry.name}); keep one")
                found[k] = Path(entry.path)
            elif not entry.name.startswith("."):
                other += 1
    if other:
        logger.warning("%s: %d file(s) not named like 00001.jpg ignored", crops_dir, other)
    return found


def _load_crop(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as f:
            im = f.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"face crop {path} cannot be read ({e}); replace it, or delete it to mark that frame as "
                         "having no face") from None


def faces_from_crops(crops_dir: str | Path, video: str | Path, out: str | Path, *, clip: str,
                     settings: FaceSettings | None = None, provenance: dict[str, Any] | None = None) -> FaceSummary:
    """Build the store of ``clip`` from pre-aligned images ``crops_dir/%05d.jpg`` (number = frame + 1) without
    detection. The frame count and timestamps come from ``video``; missing images are invalid frames; images
    numbered beyond the video's frames are ignored with a warning."""
    import h5py

    from emofusion.io import atomic_path
    from emofusion.video import frame_timestamps

    settings = settings or FaceSettings()
    started = time.perf_counter()
    files = list_crops(crops_dir)
    timestamps, info = frame_timestamps(video)
    n = len(timestamps)
    beyond = sorted(k for k in files if k < 1 or k > n)
    if beyond:
        logger.warning("%s: %d image(s) numbered outside 1..%d (the video's frames) ignored, e.g. %s", crops_dir,
                       len(beyond), n, files[beyond[0]].name)
    logger.info("%s: %d aligned crops in %s for %d frames of %s", clip, len(files) - len(beyond), crops_dir, n, video)
    S = settings.size
    step = max(1, settings.batch_size)
    resized = False
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = _create_store(f, n, S, step)
            ds["timestamps"][:] = timestamps
            ds["probability"][:] = np.nan
            for start in progress(range(0, n, step), desc=f"crops {clip}", unit="batch"):
                stop = min(n, start + step)
                crops = np.zeros((stop - start, S, S, 3), np.uint8)
                valid = np.zeros(stop - start, bool)
                for i in range(start, stop):  # one file per frame: reading is per file by nature
                    path = files.get(i + 1)
                    if path is not None:
                        crops[i - start] = _load_crop(path, S)
                        valid[i - start] = True
                if not resized and valid.any():
                    with_size = _image_size(files[start + 1 + int(np.argmax(valid))])
                    if with_size != (S, S):
                        logger.info("%s: crops are %dx%d, resized to %dx%d (faces.size)", crops_dir, *with_size, S, S)
                    resized = True
                ds["crops"][start:stop] = crops
                ds["valid"][start:stop] = valid
            summary = _finish_store(f, ds, clip=clip, video=str(video), source="cropped_aligned", settings=settings,
                                    width=info.width, height=info.height, provenance=provenance, started=started)
    _log_summary(summary, video)
    return summary


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


# -------------------------------------------------------------------------------------------------------- reading


def read_faces(path: str | Path, *, crops: bool = True) -> dict[str, Any]:
    """A face store as a dict of numpy arrays plus ``attrs`` (provenance decoded); ``crops=False`` skips the
    crops (the large part). Raises InputError naming the file when it is missing or not a face store."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"face store {path} does not exist; run `emofusion faces` (or snakemake) first")
    try:
        with h5py.File(path, "r") as f:
            missing = [d for d in DATASETS if d not in f]
            if missing or f.attrs.get("schema_version") is None:
                raise InputError(f"{path} is not a face store (missing {', '.join(missing) or 'schema_version'}); "
                                 "rebuild it with `emofusion faces`")
            out: dict[str, Any] = {d: f[d][:] for d in DATASETS if crops or d != "crops"}
            attrs = dict(f.attrs)
    except OSError as e:
        raise InputError(f"face store {path} cannot be read ({e}); delete it and rerun the face stage") from None
    attrs["provenance"] = json.loads(attrs.get("provenance") or "{}")
    out["attrs"] = attrs
    return out
