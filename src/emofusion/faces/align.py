"""Similarity alignment: the ArcFace five-point template, closed-form similarity transforms from the landmarks,
and the batched warp that cuts the aligned crops."""

from __future__ import annotations

from typing import Any

import numpy as np

from emofusion.errors import ConfigError
from emofusion.faces.config import CPU_CHUNK, FLOAT_BUDGET

# ArcFace (insightface) 112x112 five-point template in pixel-index coordinates: left eye, right eye, nose tip,
# left mouth corner, right mouth corner (left/right as seen in the image).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
_MAX_SUPERSAMPLE = 4
# Frames with more pixels than this are warped from regions around the faces, not whole (a VGA frame and below,
# the demo's among them, take the whole-frame path and its exact bytes).
REGION_MIN_PIXELS = 640 * 480


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
    norm = (p**2).sum(dim=(1, 2)).clamp_min(1e-12)
    a = (p[..., 0] * q[:, 0] + p[..., 1] * q[:, 1]).sum(dim=1) / norm
    b = (p[..., 0] * q[:, 1] - p[..., 1] * q[:, 0]).sum(dim=1) / norm
    mx, my = src_mean[:, 0, 0], src_mean[:, 0, 1]
    tx = dst_mean[0] - (a * mx - b * my)
    ty = dst_mean[1] - (b * mx + a * my)
    return torch.stack([torch.stack([a, -b, tx], dim=1), torch.stack([b, a, ty], dim=1)], dim=1)


def warp_faces(frames, transforms, size: int, index=None, *, scale: tuple[float, float] = (1.0, 1.0)):
    """Aligned ``size x size`` crops of ``frames (B, 3, H, W)`` uint8 under ``transforms (B, 2, 3)`` (frame pixels
    -> crop pixels); with ``index (K,)`` only of those frames (``transforms (K, 2, 3)``), without copying the rest.
    ``affine_grid`` + ``grid_sample`` a chunk of frames at a time; when the face is larger than the crop (the warp
    shrinks it), each crop pixel averages ceil(1 / scale) x ceil(1 / scale) samples (at most 4 x 4) so it does not
    alias. ``scale (sx, sy)``: ``frames`` are the frames the transforms were made for, shrunk by these factors (the
    detection images: pixel x there is pixel ``(x + 0.5) * sx - 0.5`` of the original). Returns ``(K, S, S, 3)``
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
    sx, sy = scale
    shrink = float(det.sqrt().min()) * min(sx, sy)  # crop pixels per pixel of ``frames``
    ss = int(min(_MAX_SUPERSAMPLE, max(1, np.ceil(1.0 / max(shrink, 1e-6)))))
    # theta maps normalised crop coordinates to normalised frame coordinates (align_corners=False):
    # crop normalised -> crop pixels -> (inverse similarity) frame pixels -> frame normalised.
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    inverse = torch.stack(
        [
            torch.stack([a, b, -(a * tx + b * ty)], 1) / det[:, None],
            torch.stack([-b, a, b * tx - a * ty], 1) / det[:, None],
            torch.stack([zero, zero, one], 1),
        ],
        1,
    )  # (B, 3, 3)
    if (sx, sy) != (1.0, 1.0):  # original frame pixels -> pixels of the shrunk frames
        to_source = [[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5], [0, 0, 1]]
        inverse = torch.tensor(to_source, dtype=torch.float64, device=m.device) @ inverse
    k = size / 2.0
    from_crop = torch.tensor([[k, 0, k - 0.5], [0, k, k - 0.5], [0, 0, 1]], dtype=torch.float64, device=m.device)
    to_frame: Any = torch.tensor(
        [[2 / W, 0, 1 / W - 1], [0, 2 / H, 1 / H - 1], [0, 0, 1]], dtype=torch.float64, device=m.device
    )
    n = size * ss
    out = torch.empty((B, size, size, C), dtype=torch.uint8, device=frames.device)
    if H * W > REGION_MIN_PIXELS:
        # A large frame: sample each face from its own region, so only the pixels around the faces become float
        # (a 1080p frame is 25 x the region of a typical face); smaller frames keep the exact old path.
        to_frame = None
        origin, (rh, rw) = _regions(inverse @ from_crop, H, W)
        ox, oy = origin[:, 0].to(torch.float64), origin[:, 1].to(torch.float64)
        to_region = torch.zeros((B, 3, 3), dtype=torch.float64, device=m.device)
        to_region[:, 0, 0], to_region[:, 0, 2] = 2 / rw, (1 - 2 * ox) / rw - 1
        to_region[:, 1, 1], to_region[:, 1, 2] = 2 / rh, (1 - 2 * oy) / rh - 1
        to_region[:, 2, 2] = 1
        theta = (to_region @ inverse @ from_crop)[:, :2].float()
        pixels = rh * rw
    else:
        theta = (to_frame @ inverse @ from_crop)[:, :2].float()  # (B, 2, 3)
        pixels = H * W
    step = max(1, FLOAT_BUDGET // (C * max(pixels, n * n)))
    if frames.device.type == "cpu":
        step = min(step, CPU_CHUNK)  # cache-sized chunks, as in detection
    for i in range(0, B, step):
        if to_frame is None:  # every face's (C, rh, rw) region, sliced (an index gather is several times slower)
            corners = origin[i : i + step].tolist()
            chunk = torch.stack(
                [
                    frames[b, :, y : y + rh, x : x + rw]
                    for b, (x, y) in zip(index[i : i + step].tolist(), corners, strict=True)
                ]
            )
        else:
            chunk = frames.index_select(0, index[i : i + step])
        grid = affine_grid(theta[i : i + step], [chunk.shape[0], C, n, n], align_corners=False)  # (b, n, n, 2)
        crop = grid_sample(chunk.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if ss > 1:
            crop = avg_pool2d(crop, ss)
        out[i : i + step] = crop.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


def cut_faces(frames, transforms, size: int, index=None, *, images=None):
    """:func:`warp_faces` of ``frames (B, 3, H, W)``, each face from the smallest image that holds it at the crop's
    resolution: from ``images (B, 3, h, w)``, the same frames at the detection size, where the face there is at
    least as large as in the crop (the warp shrinks it, as on a frame of that size), else from the full frames. So
    the large faces of a large video cost what they cost at the detection size, and full-resolution pixels are
    read only for the faces that need them. Without ``images`` (frames at the detection size already) all come
    from ``frames``: the same bytes as :func:`warp_faces`."""
    import torch

    if images is None or tuple(images.shape[2:]) == tuple(frames.shape[2:]):
        return warp_faces(frames, transforms, size, index)
    if index is None:
        index = torch.arange(frames.shape[0], device=frames.device)
    (H, W), (h, w) = frames.shape[2:], images.shape[2:]
    scale = (W / w, H / h)
    m = transforms.to(device=frames.device, dtype=torch.float64)
    shrink = (m[:, 0, 0] ** 2 + m[:, 1, 0] ** 2).sqrt() * max(scale)  # crop pixels per detection image pixel
    small = shrink <= 1
    if bool(small.all()):
        return warp_faces(images, m, size, index, scale=scale)
    if not bool(small.any()):
        return warp_faces(frames, m, size, index)
    out = torch.empty((len(index), size, size, frames.shape[1]), dtype=torch.uint8, device=frames.device)
    out[small] = warp_faces(images, m[small], size, index[small], scale=scale)
    out[~small] = warp_faces(frames, m[~small], size, index[~small])
    return out


def _regions(crop_to_frame, H: int, W: int):
    """Per crop, the top-left ``origin (B, 2)`` (x, y) of a region of the frame holding every pixel its samples
    read, and the region size ``(rh, rw)`` shared by the batch (the largest face's, at most the frame): the crop
    square's corners through ``crop_to_frame (B, 3, 3)`` (crop pixels -> frame pixels), a 2-pixel margin for the
    bilinear neighbours, the origin moved inside the frame. Outside the frame the region ends with the frame, so
    sampling there still reads zeros."""
    import torch

    k = crop_to_frame.new_tensor  # the crop's pixel-centre square (-1, 1) normalised -> pixel edges, as from_crop
    corners = k([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]).T  # (3, 4)
    xy = (crop_to_frame @ corners)[:, :2]  # (B, 2, 4) frame pixels
    low = (xy.amin(dim=2).floor() - 2).clamp_min(0)
    high = xy.amax(dim=2).ceil() + 3
    high = torch.minimum(high, high.new_tensor([W, H]))
    size = (high - low).clamp_min(1).amax(dim=0)  # (2,) the batch's region: w, h
    rw, rh = min(int(size[0]), W), min(int(size[1]), H)
    origin = torch.minimum(low, low.new_tensor([W - rw, H - rh])).long()
    return origin, (rh, rw)


def transform_points(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``(B, 2, 3)`` transforms to ``(B, P, 2)`` points."""
    t = np.asarray(transforms, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return np.einsum("bij,bpj->bpi", t[:, :, :2], p) + t[:, None, :, 2]
