"""The per-video stage outputs of ``emofusion predict``, cached on disk.

Layout: ``<cache>/<first 24 hex of the video's sha256>/<stage>-<key>.<ext>``. Each key hashes the stage's settings,
the device it ran on, the emofusion version and the key of the stage it reads, so predicting the same video with
a second model built on the same backbones reuses every stage and only runs the model, and any changed setting
gets a new file instead of a stale one. The stages write atomically (their own functions do), so a killed
prediction never leaves a half-written entry that a later one would trust.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emofusion.provenance import config_hash


def video_sha256(path: str | Path) -> str:
    from emofusion.provenance import file_sha256

    return file_sha256(path)


def stage_key(**parts: Any) -> str:
    import emofusion

    return config_hash({"emofusion": emofusion.__version__, **parts})


@dataclass
class VideoCache:
    """The cache folder of one video; ``hits`` / ``misses`` record which stages were reused (for the JSON)."""

    root: Path
    sha256: str
    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage computed (benchmarks)

    @classmethod
    def open(cls, cache: str | Path, video: str | Path, sha256: str | None = None) -> VideoCache:
        sha = sha256 or video_sha256(video)
        root = Path(cache) / sha[:24]
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, sha)

    def path(self, stage: str, key: str, ext: str) -> Path:
        return self.root / f"{stage}-{key}{ext}"

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def have(self, stage: str, *paths: Path) -> bool:
        """True when every file of the entry exists (recording a hit), else False (a miss: compute it)."""
        ok = all(p.is_file() for p in paths)
        (self.hits if ok else self.misses).append(stage)
        return ok
