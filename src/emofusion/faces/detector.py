"""MTCNN (facenet-pytorch's P/R/O-nets and weights) run on whole batches of frames on the configured device.

The candidate crops of its second and third stages come from one gather over an image pyramid
(:mod:`emofusion.faces.pyramid`) instead of a Python loop per candidate; optionally the P-net runs only on every
``faces.detect_every``-th frame (:class:`MTCNNDetector`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emofusion.errors import ConfigError
from emofusion.faces.config import CPU_CHUNK
from emofusion.faces.pyramid import Pyramid, nonempty, resize_frames, run_on_crops
from emofusion.log import logger
from emofusion.packages import import_module
from emofusion.provenance import file_sha256


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


# What the detector's outputs mean, beyond its settings and weights: raised when the same settings start to give
# other stores, so caches keyed on it (predict's) are not reused across the change. 2: faces.min_face_size counts
# detection pixels, frames over 640x480 are warped from regions around their faces. 3: faces that the detection
# image holds at the crop's resolution are warped from it (frames over faces.max_side; their crops change a little).
DETECTION_VERSION = 3


@functools.cache
def mtcnn_weights() -> dict[str, str]:
    """SHA-256 of the P-, R- and O-net weight files that ship in the facenet-pytorch wheel (for provenance)."""
    facenet_pytorch = import_module("facenet_pytorch", "facenet-pytorch", key="faces (the MTCNN face detector)")
    data = Path(str(facenet_pytorch.__file__)).parent / "data"
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

    def __init__(
        self,
        *,
        min_face_size: int,
        thresholds,
        factor: float,
        max_side: int | None,
        detect_every: int,
        device="cpu",
    ):
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
        self.reset()
        # channels-last convolutions are 2-4x faster on CPU and fine on CUDA; the pyramid is kept channels-last
        # too, so a level is also an (N*h*w, 3) pixel table for the crop gather without a copy.
        self.pnet = PNet().to(self.device, memory_format=torch.channels_last).eval()
        self.rnet = RNet().to(self.device, memory_format=torch.channels_last).eval()
        self.onet = ONet().to(self.device, memory_format=torch.channels_last).eval()

    def reset(self) -> None:
        """Start a new stream (the next clip of a shard): the networks stay loaded, the per-clip state goes."""
        self._seen = 0  # frames seen so far (key frames are multiples of detect_every)
        self._carry = None  # (n, 5) faces of the last key frame, detection pixels, for the next call
        self._carry_frame = 0  # that key frame's index in the stream
        self._warned_min = False

    def detection_size(self, height: int, width: int) -> tuple[int, int, float]:
        """(h, w, scale) of the image MTCNN sees for a ``height x width`` frame."""
        scale = 1.0
        if self.max_side and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale)), scale

    def detection_images(self, frames):
        """``frames (B, 3, H, W)`` uint8 at the detection size (antialiased), or None when they are that size
        already. What :meth:`__call__` does first; done beforehand (in the decoding thread, say) it can be passed
        in, and the images serve the crops of large faces too (:func:`emofusion.faces.align.cut_faces`)."""
        H, W = frames.shape[2:]
        h, w, _ = self.detection_size(H, W)
        return None if (h, w) == (H, W) else resize_frames(frames, h, w)

    def __call__(self, frames, images=None) -> Detections:
        """Detect faces in ``frames (B, 3, H, W)`` uint8 on the detector's device (the next B frames of the
        stream when ``detect_every > 1``); ``images``: the frames' :meth:`detection_images` if already made."""
        import torch

        B, _, H, W = frames.shape
        h, w, scale = self.detection_size(H, W)
        if images is not None and tuple(images.shape) != (B, 3, h, w):
            raise ValueError(f"detection images {tuple(images.shape)} for frames {tuple(frames.shape)}")
        # The smallest face is counted in pixels of the image MTCNN sees, so a 1080p and a 360p copy of one video
        # are searched alike and the cost follows the detection size, not the source's (issue 23).
        min_size = max(12.0, float(self.min_face_size))
        if scale < 1 and not self._warned_min:
            logger.info(
                "detecting on %dx%d frames (faces.max_side): faces smaller than %.0f px in the %dx%d video "
                "(faces.min_face_size %d px at detection size) are not found",
                w,
                h,
                min_size / scale,
                W,
                H,
                self.min_face_size,
            )
            self._warned_min = True
        # On a CPU, chunks of a few frames keep the pyramid and activations in cache (B = 32 at once is 30-50%
        # slower per frame than B = 4..8); a GPU takes the whole batch.
        step = B if self.device.type == "cuda" else CPU_CHUNK
        parts = []
        with torch.inference_mode():
            for i in range(0, B, step):
                if images is None:
                    chunk = resize_frames(frames[i : i + step], h, w)  # (b, 3, h, w) uint8
                else:
                    chunk = images[i : i + step]
                key = None
                if self.detect_every > 1:
                    key = (self._seen + np.arange(len(chunk))) % self.detect_every == 0
                frame, boxes, points = self._detect(chunk, min_size, key)
                self._seen += len(chunk)
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
        return Detections(
            frame=frame,
            boxes=boxes[:, :4].astype(np.float32),
            points=points.astype(np.float32),
            probs=boxes[:, 4].astype(np.float32),
            offsets=offsets,
        )

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
        pyramid = Pyramid(images, [(int(h * s + 1), int(w * s + 1)) for s in scales])
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
        boxes, inds = _jittered(
            src_boxes[torch.as_tensor(pair_src, device=dev)],
            torch.as_tensor(frames_on, device=dev),
            torch.as_tensor(age, device=dev),
        )
        groups = torch.arange(len(pair_src), device=dev).repeat_interleave(len(boxes) // len(pair_src))
        tracked = self._refine(pyramid, boxes, inds, groups)
        if found is None:
            return _to_numpy(*tracked)
        return _to_numpy(*(torch.cat([a, b]) for a, b in zip(found, tracked, strict=True)))

    def _propose(self, pyramid: Pyramid, scales: list[float], idx: np.ndarray | None):
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
        boxes = torch.stack(
            [
                boxes[:, 0] + boxes[:, 5] * regw,
                boxes[:, 1] + boxes[:, 6] * regh,
                boxes[:, 2] + boxes[:, 7] * regw,
                boxes[:, 3] + boxes[:, 8] * regh,
                boxes[:, 4],
            ],
            dim=1,
        )
        return rerec(boxes), inds

    def _refine(self, pyramid: Pyramid, boxes, inds, groups=None):
        """Stages 2 and 3 on candidate boxes (K, >=4) of frames ``inds``: R-net (score, regression, NMS), then
        O-net (score, regression, landmarks, NMS). Returns tensors frame (K,), boxes (K, 5), points (K, 5, 2).

        ``groups (K,)``: candidates proposed around one known face; only the best-scoring one of each group goes
        on to the O-net (instead of the R-net's NMS, which would keep many of the overlapping proposals)."""
        import torch
        from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, rerec
        from torchvision.ops import batched_nms

        dev = pyramid.table.device
        none = (
            torch.zeros(0, dtype=torch.long, device=dev),
            torch.zeros((0, 5), device=dev),
            torch.zeros((0, 5, 2), device=dev),
        )
        # Stage 2: R-net on 24x24 crops of every candidate.
        ok = nonempty(boxes)
        boxes, inds = boxes[ok], inds[ok]
        if groups is not None:
            groups = groups[ok]
        if len(boxes) == 0:
            return none
        reg, score = run_on_crops(self.rnet, pyramid, boxes, inds, 24)
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
        ok = nonempty(boxes)
        boxes, inds = boxes[ok], inds[ok]
        if len(boxes) == 0:
            return none
        reg, lms, score = run_on_crops(self.onet, pyramid, boxes, inds, 48)
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
    dx, dy, sc = torch.meshgrid(
        torch.tensor(_JITTER_SHIFTS, device=dev),
        torch.tensor(_JITTER_SHIFTS, device=dev),
        torch.tensor(_JITTER_SCALES, device=dev),
        indexing="ij",
    )
    dx, dy, sc = dx.reshape(-1), dy.reshape(-1), sc.reshape(-1)  # (J,)
    reach = (size * age.clamp_min(1).to(size.dtype))[:, None]  # (K, 1)
    ncx = cx[:, None] + dx[None] * reach  # (K, J)
    ncy = cy[:, None] + dy[None] * reach
    half = sc[None] * size[:, None] / 2
    out = torch.stack([ncx - half, ncy - half, ncx + half, ncy + half, torch.zeros_like(ncx)], dim=2)
    return out.reshape(-1, 5), inds.repeat_interleave(len(dx))
