"""VGGish (Hershey et al. 2017) in the layout of torchvggish's state dicts, and its log-mel front end's mel
weights.
"""

from __future__ import annotations

import numpy as np

from emofusion.features.backbones._audio import SAMPLE_RATE


def vggish_network():
    """VGGish (Hershey et al. 2017) in the layout of torchvggish's state dicts
    (``features.*`` convolutions, ``embeddings.*`` fully connected), so their weight files load as they are."""
    from torch import nn

    class VGGish(nn.Module):
        def __init__(self):
            super().__init__()
            layers: list[nn.Module] = []
            cin = 1
            for cout, n in ((64, 1), (128, 1), (256, 2), (512, 2)):
                for _ in range(n):
                    layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
                    cin = cout
                layers.append(nn.MaxPool2d(2, 2))
            self.features = nn.Sequential(*layers)
            self.embeddings = nn.Sequential(
                nn.Linear(512 * 4 * 6, 4096),
                nn.ReLU(True),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Linear(4096, 128),
                nn.ReLU(True),
            )

        def forward(self, x):
            """x (B, 1, 96, 64) log-mel examples -> (B, 128)."""
            x = self.features(x)  # (B, 512, 6, 4)
            x = x.permute(0, 2, 3, 1).reshape(len(x), -1)  # channels last, as the TensorFlow original flattens
            return self.embeddings(x)

    return VGGish()


def vggish_mel_matrix(n_fft_bins: int = 257, n_mels: int = 64, fmin: float = 125.0, fmax: float = 7500.0):
    """VGGish's mel weights (n_fft_bins, n_mels): HTK mel, triangles linear in mel, DC bin dropped."""

    def to_mel(hz):
        return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)

    bins_mel = to_mel(np.linspace(0.0, SAMPLE_RATE / 2, n_fft_bins))[:, None]  # (F, 1)
    edges = np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0.0, np.minimum((bins_mel - lower) / (centre - lower), (upper - bins_mel) / (upper - centre)))
    weights[0] = 0.0
    return weights.astype(np.float32)
