"""The torch device a stage runs on, from its config key (``faces.device``, ``asr.device``, ...), and what float32
means there.

TF32: on Ampere and later cards cuDNN runs float32 convolutions in TF32 by default (10-bit mantissa), so CUDA
float32 differs from the CPU by about 1e-3 and a store would depend on the card it was built on. Extraction (faces,
embedding) therefore runs exact float32 (``tf32=False``, the default of :func:`resolve_device`); training may turn
TF32 on for speed with ``fusion.tf32`` (``features.tf32`` likewise for the embedding stage, at the price of
card-dependent stores). The switch sets torch's process-wide flags, so it is applied where the stage's device is
resolved; on the CPU the flags change nothing.
"""

from __future__ import annotations

from emofusion.errors import ConfigError


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matmuls and cuDNN convolutions on CUDA (``torch.backends.cuda.matmul.allow_tf32`` and
    ``torch.backends.cudnn.allow_tf32``): False = exact float32 (IEEE), True = faster, about 1e-3 relative error."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def resolve_device(name: str, *, key: str = "faces.device", tf32: bool = False):
    """``auto`` -> CUDA when visible, else CPU; an explicit ``cuda`` without a GPU is a ConfigError naming ``key``.
    Sets TF32 as ``tf32`` says (default off: exact float32, see the module's docstring)."""
    import torch

    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key} is {name!r} but no CUDA device is visible; set {key} to auto or cpu")
    elif name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"{key}: {name!r} is not one of auto, cpu, cuda")
    else:
        device = torch.device(name)
    set_tf32(tf32)
    return device
