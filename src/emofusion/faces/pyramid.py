"""The images MTCNN works on: frames resized to the detection size, their P-net pyramid in one normalised table,
and the R-/O-net candidate crops gathered from it (split from :mod:`emofusion.faces.detector`)."""

from __future__ import annotations

from emofusion.faces.config import FLOAT_BUDGET

_CROP_SAMPLES = 1 << 19  # candidate crop pixels gathered per R-/O-net pass (bounds memory on crowded frames)
_CANDIDATE_BUCKET = 32  # candidate counts are rounded up to a multiple of this

_BLACK = (0.0 - 127.5) * 0.0078125  # a black pixel after MTCNN's normalisation


class Pyramid:
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
            level = self.table[off : off + n].view(B, hl, wl, 3).permute(0, 3, 1, 2)
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


def nonempty(boxes):
    """Mask of the candidates with at least one pixel inside (degenerate ones cannot be sampled by the crop stages)."""
    return (boxes[:, 2].trunc() > boxes[:, 0].trunc() - 1) & (boxes[:, 3].trunc() > boxes[:, 1].trunc() - 1)


def run_on_crops(net, pyramid: Pyramid, boxes, inds, size: int):
    """``net`` on the ``size x size`` crops of all candidates, in chunks of a fixed number of candidates (bounded
    memory on crowded frames; counts rounded up to a multiple of ``_CANDIDATE_BUCKET`` so oneDNN / cuDNN see few
    distinct shapes)."""
    import torch

    chunk = max(_CANDIDATE_BUCKET, _CROP_SAMPLES // (size * size) // _CANDIDATE_BUCKET * _CANDIDATE_BUCKET)
    outs = []
    for i in range(0, len(boxes), chunk):
        crops = pyramid.crop(boxes[i : i + chunk], inds[i : i + chunk], size)
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
        return interpolate(
            images.contiguous(memory_format=torch.channels_last),
            size=(h, w),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
    out = interpolate(images.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def resize_frames(frames, h: int, w: int):
    """``frames (B, 3, H, W)`` uint8 -> ``(B, 3, h, w)`` uint8 (antialiased), a chunk of frames at a time so
    no full-resolution float copy of the whole batch is made."""
    import torch

    B, C, H, W = frames.shape
    if (H, W) == (h, w):
        return frames
    # channels-last, as the decoder's frames are: the pyramid and the crop warp read it as they read those
    out = torch.empty((B, C, h, w), dtype=torch.uint8, device=frames.device, memory_format=torch.channels_last)
    step = max(1, FLOAT_BUDGET // (C * H * W))
    for i in range(0, B, step):
        out[i : i + step] = _resize_u8(frames[i : i + step], h, w)
    return out
