"""PyEmotion's NetworkV2 FER2013 CNN, rebuilt in PyTorch from its state dict (the package's own module imports
OpenCV and facenet-pytorch).
"""

from __future__ import annotations

import itertools


def network_v2(state: dict):
    """PyEmotion's NetworkV2 rebuilt from its state dict's shapes: 4 reflection-padded 3x3 conv-BN-ReLU stages
    (strides 1, 2, 2, 2), then Linear-ReLU (the penultimate layer) and Linear-Sigmoid."""
    import torch.nn as nn

    class NetworkV2(nn.Module):
        """(B, 1, 48, 48) in [-1, 1] -> (features (B, hidden), scores (B, classes))."""

        def __init__(self, channels: list[int], flat: int, hidden: int, classes: int):
            super().__init__()
            for i, (cin, cout) in enumerate(itertools.pairwise(channels)):
                setattr(
                    self,
                    f"conv_{i + 1}",
                    nn.Sequential(
                        nn.ReflectionPad2d(1),
                        nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2),
                        nn.BatchNorm2d(cout),
                        nn.ReLU(),
                    ),
                )
            self.stages = len(channels) - 1
            self.linear = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, classes), nn.Sigmoid())

        def forward(self, x):
            for i in range(self.stages):
                x = getattr(self, f"conv_{i + 1}")(x)
            features = self.linear[1](self.linear[0](x.flatten(1)))  # (B, C*6*6) -> (B, hidden)
            return features, self.linear[3](self.linear[2](features))

    stages = sorted(
        int(k.split(".")[0].split("_")[1]) for k in state if k.startswith("conv_") and k.endswith(".1.weight")
    )
    channels = [int(state["conv_1.1.weight"].shape[1])] + [int(state[f"conv_{i}.1.weight"].shape[0]) for i in stages]
    hidden, flat = (int(s) for s in state["linear.0.weight"].shape)
    classes = int(state["linear.2.weight"].shape[0])
    net = NetworkV2(channels, flat, hidden, classes)
    net.load_state_dict(state, strict=True)
    return net.eval()
