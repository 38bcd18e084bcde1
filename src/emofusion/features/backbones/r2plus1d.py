"""``r2plus1d``: torchvision's R(2+1)D-18 video CNN (a local state dict) on a window of frames ending at each
frame, pooled to a grid of cells for the fusion models' spatial attention.
"""

from __future__ import annotations

from emofusion.errors import ConfigError
from emofusion.features.backbones._registry import register, sha256_files
from emofusion.features.backbones._visual import KINETICS_MEAN, KINETICS_STD, TorchVisual, normalise, to_float
from emofusion.features.backbones.nets.state_dicts import load_state_dict


@register
class R2Plus1D(TorchVisual):
    """torchvision R(2+1)D-18 (Kinetics-400, a local state dict) on ``window`` frames ending at each frame.

    Output: the last conv block's map averaged over time and pooled to ``grid`` x ``grid`` cells, flattened
    channel-major (C*P: channel c's P cells together), so the fusion models' spatial attention can unflatten it
    as (C=512, P=grid*grid)."""

    name = "r2plus1d"
    licence = "BSD-3-Clause (torchvision code); Kinetics-400 weights user-downloaded (torchvision's r2plus1d_18)"
    amp = True
    offline = False
    packages = ("torchvision",)
    native_rate = 0.0
    timeline = (
        "one row per video frame from a window of `window` aligned crops ending at that frame "
        "(frames before 0 repeat frame 0)"
    )

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        self.path = self.weight_path("weights")
        import torch.nn as nn
        from torchvision.models.video import r2plus1d_18

        self.window = int(self.option("window", 8))
        self.grid = int(self.option("grid", 2))
        self.input_size = int(self.option("input_size", 112))
        if self.window < 1 or self.grid < 1:
            raise ConfigError(f"{self.key('window')} and {self.key('grid')} must be positive integers")
        state = load_state_dict(self.path, key=self.key("weights"))
        net = r2plus1d_18(weights=None, num_classes=int(state["fc.weight"].shape[0]) if "fc.weight" in state else 400)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ConfigError(
                f"{self.key('weights')}: {self.path} is not an r2plus1d_18 state dict ({str(e)[:300]})"
            ) from None
        net.avgpool, net.fc = nn.Identity(), nn.Identity()
        self.width = 512 * self.grid * self.grid
        self._finish(nn.Sequential(net.stem, net.layer1, net.layer2, net.layer3, net.layer4))

    def weights(self):
        return str(self.path), sha256_files([self.path])

    def _forward(self, clips):
        import torch.nn.functional as F

        B, T = clips.shape[:2]
        x = to_float(clips.flatten(0, 1), self.input_size, grey=False)  # (B*T, 3, S, S)
        x = x.unflatten(0, (B, T)).transpose(1, 2)  # (B, 3, T, S, S)
        x = self.net(normalise(x, KINETICS_MEAN, KINETICS_STD))  # (B, 512, T', s, s)
        x = F.adaptive_avg_pool2d(x.mean(2), self.grid)  # (B, 512, grid, grid)
        return x.flatten(1)  # (B, 512 * grid * grid), channel-major
