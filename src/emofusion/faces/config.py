"""Settings of the face stage (the validated ``faces:`` config section) and the summary of a written store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Float elements (64 MB) converted from uint8 frames at once when resizing or warping full frames.
FLOAT_BUDGET = 1 << 24
CPU_CHUNK = 8  # frames per MTCNN pass on a CPU


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
    decode: str = "auto"
    fill_gaps: int = 0

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> FaceSettings:
        """Settings from ``config["faces"]`` as ``load_config`` returns it: the schema has rejected unknown keys
        and bad values and filled the defaults, so nothing is checked again here."""
        section = dict(section)
        if "thresholds" in section:
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
