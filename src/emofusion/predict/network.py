"""A model over one video's feature rows, in memory: the fold data, normaliser, windowing and reassembly of
:mod:`emofusion.fusion_data` (the very code evaluation runs) and evaluation's smoothing, with no labels (a new
video has none)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.fusion_data.clips import FoldClips
from emofusion.fusion_data.data import FusionData
from emofusion.fusion_data.normaliser import Normaliser
from emofusion.fusion_data.predict import predict_frames
from emofusion.fusion_data.sources import MemoryFeatures, check_coverage
from emofusion.fusion_data.windows import Windowing, at_rate, grid_of_frames, rate_grid
from emofusion.log import logger

Rows = dict[str, tuple[np.ndarray, np.ndarray]]  # modality -> (features (N, D), valid (N,)) of one clip


def run_model(
    network,
    recipe: dict[str, Any],
    extra: dict[str, Any],
    rows: Rows,
    clip: str,
    frames: int,
    times: np.ndarray | None,
    *,
    device,
    origins: Mapping[str, Path] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 2)`` raw and smoothed predictions of the ``frames`` frames of ``clip`` (feature ``rows``, one per
    frame at ``times`` seconds). A clip at the rate the model was trained at (the recipe's ``windowing.rate``; a
    recipe without one: any clip) is predicted frame for frame; another one meets the model on a uniform grid at
    that rate and each frame takes back the grid sample at or before its time
    (:mod:`emofusion.fusion_data.windows`), so the windows and the smoothing span the seconds they spanned in
    training. ``origins``: the file a modality's rows were read from (a cached shard), named by their errors."""
    windowing = Windowing(**recipe["windowing"])
    if times is None or windowing.rate is None or at_rate(times, windowing.rate):
        return _model_on_rows(network, recipe, extra, rows, clip, frames, windowing, device=device, origins=origins)
    grid, source = rate_grid(times, windowing.rate)
    logger.info(
        "%s: %d frames (%.3f fps on average) meet the model at its training rate, %d rows at %g fps",
        clip,
        frames,
        (frames - 1) / max(float(times[-1] - times[0]), 1e-9),
        len(grid),
        windowing.rate,
    )
    on_grid = {m: (x[source], v[source]) for m, (x, v) in rows.items()}
    raw, smoothed = _model_on_rows(
        network, recipe, extra, on_grid, clip, len(grid), windowing, device=device, origins=origins
    )
    back = grid_of_frames(times, grid, windowing.rate)
    return raw[back], smoothed[back]


def _model_on_rows(
    network,
    recipe: dict[str, Any],
    extra: dict[str, Any],
    rows: Rows,
    clip: str,
    frames: int,
    windowing,
    *,
    device,
    origins: Mapping[str, Path] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The model over one clip's rows as they are, then the recipe's smoothing windows (rows counted)."""
    from emofusion.evaluation.smoothing import smooth

    training = recipe["experiment_config"]["training"]
    origins = origins or {}
    sources = {
        m: MemoryFeatures(m, {clip: (x, v)}, width=x.shape[1], path=origins.get(m)) for m, (x, v) in rows.items()
    }
    table = FoldClips.one_clip(clip, frames, windowing)
    for source in sources.values():
        check_coverage(source, table)
    data = FusionData(table, sources, normaliser=Normaliser.from_plain(extra["normaliser"]))
    raw = predict_frames(
        network, data, [clip], device=device, batch_size=int(training["batch_size"]), amp=training["amp"]
    )[0][clip]
    smoothed = np.clip(smooth({clip: raw}, recipe["smoothing"])[clip], -1.0, 1.0)
    return raw, smoothed
