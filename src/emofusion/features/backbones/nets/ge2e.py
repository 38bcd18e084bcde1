"""resemblyzer's GE2E speaker encoder in the layout of its ``pretrained.pt`` (resemblyzer itself imports librosa,
resampy and webrtcvad, which the project does not need).
"""

from __future__ import annotations


def ge2e_network():
    import torch
    from torch import nn

    class GE2E(nn.Module):
        """resemblyzer's speaker encoder: 3-layer LSTM 40->256, linear 256->256, ReLU, L2 norm."""

        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)

        def forward(self, mels, lengths):
            """mels (B, T, 40) left-aligned, lengths (B,) -> (B, 256) unit vectors."""
            packed = nn.utils.rnn.pack_padded_sequence(mels, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (hidden, _) = self.lstm(packed)
            embeds = torch.relu(self.linear(hidden[-1]))
            return embeds / embeds.norm(dim=1, keepdim=True).clamp_min(1e-12)

    return GE2E()
