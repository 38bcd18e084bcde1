"""Settings of the face stage (the validated ``faces:`` config section) and the summary of a written store."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from emofusion.config import over_defaults

# Float elements (64 MB) converted from uint8 frames at once when resizing or warping full frames.
FLOAT_BUDGET = 1 << 24
CPU_CHUNK = 8  # frames per MTCNN pass on a CPU


@dataclass(frozen=True)
class FaceSettings:
    """The ``faces:`` config section. No defaults here: the schema (src/emofusion/schemas/config.schema.yaml) holds
    each key's meaning and default, and :meth:`from_config` fills them."""

    size: int
    margin: float
    min_face_size: int
    thresholds: tuple[float, float, float]
    pyramid_factor: float
    min_probability: float
    max_side: int | None
    detect_every: int
    reacquire_after: int
    batch_size: int
    device: str
    decode: str
    fill_gaps: int

    @classmethod
    def from_config(cls, section: dict[str, Any] | None = None) -> FaceSettings:
        """Settings from ``config["faces"]`` as ``load_config`` validated it, or any part of it (a store's record
        from an older version, a test's few keys): the keys not given take the schema's defaults."""
        section = over_defaults("faces", section, (f.name for f in fields(cls)))
        section["thresholds"] = tuple(float(t) for t in section["thresholds"])
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
