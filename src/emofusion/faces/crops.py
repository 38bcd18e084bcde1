"""The ``cropped_aligned`` source: a face store from the aligned crops a corpus ships, without detection.

Aff-Wild2 ``cropped_aligned/<clip>/%05d.jpg``: number = frame + 1, a missing image = no face; images are resized
to ``faces.size`` if needed. The frame count and timestamps come from the clip's video.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import InputError
from emofusion.faces.config import FaceSettings, FaceSummary
from emofusion.faces.store import create_face_store, log_summary
from emofusion.log import logger, progress
from emofusion.video import frame_timestamps

_CROP_NAME = re.compile(r"^(\d+)\.(jpe?g|png)$", re.IGNORECASE)


def list_crops(crops_dir: str | Path) -> dict[int, Path]:
    """Image number -> path for ``%05d.jpg``-style files of a crops folder (other names are ignored, logged)."""
    crops_dir = Path(crops_dir)
    if not crops_dir.is_dir():
        raise InputError(
            f"crops folder {crops_dir} does not exist; fix corpus.root or the manifest's crops column, "
            "or set corpus.use_cropped_aligned: false to detect faces instead"
        )
    found: dict[int, Path] = {}
    other = 0
    with os.scandir(crops_dir) as it:
        for entry in it:
            m = _CROP_NAME.match(entry.name)
            if m and entry.is_file():
                k = int(m.group(1))
                if k in found:
                    raise InputError(
                        f"{crops_dir}: two images for frame number {k} ({found[k].name} and {entry.name}); keep one"
                    )
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
        raise InputError(
            f"face crop {path} cannot be read ({e}); replace it, or delete it to mark that frame as having no face"
        ) from None


def faces_from_crops(
    crops_dir: str | Path,
    video: str | Path,
    out: str | Path,
    *,
    clip: str,
    settings: FaceSettings | None = None,
    provenance: dict[str, Any] | None = None,
) -> FaceSummary:
    """Build the store of ``clip`` from pre-aligned images ``crops_dir/%05d.jpg`` (number = frame + 1) without
    detection. The frame count and timestamps come from ``video``; missing images are invalid frames; images
    numbered beyond the video's frames are ignored with a warning."""

    settings = settings or FaceSettings.from_config()
    started = time.perf_counter()
    files = list_crops(crops_dir)
    timestamps, info = frame_timestamps(video)
    n = len(timestamps)
    beyond = sorted(k for k in files if k < 1 or k > n)
    if beyond:
        logger.warning(
            "%s: %d image(s) numbered outside 1..%d (the video's frames) ignored, e.g. %s",
            crops_dir,
            len(beyond),
            n,
            files[beyond[0]].name,
        )
    logger.info("%s: %d aligned crops in %s for %d frames of %s", clip, len(files) - len(beyond), crops_dir, n, video)
    S = settings.size
    step = max(1, settings.batch_size)
    resized = False
    with create_face_store(out, n, size=S, batch=step) as store:
        store.fill("timestamps", timestamps)
        store.fill("probability", np.nan)
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
            store.write(start, crops=crops, valid=valid)
        summary = store.finish(
            clip=clip,
            video=str(video),
            source="cropped_aligned",
            settings=settings,
            width=info.width,
            height=info.height,
            provenance=provenance,
            started=started,
        )
    log_summary(summary, video)
    return summary


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size
