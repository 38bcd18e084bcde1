"""TensorFlow's 'same' padding and BatchNorm epsilon on a torchvision network, to run weights trained in the
TensorFlow layout (timm's ``tf_`` EfficientNets, which HSEmotion uses).
"""

from __future__ import annotations


def tf_same_convs(module) -> None:
    """Give every strided conv TensorFlow's 'same' padding (timm's ``tf_`` EfficientNets, which HSEmotion uses):
    asymmetric, computed from the input size, instead of torchvision's symmetric k//2."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Conv2dSame(nn.Conv2d):
        def forward(self, x):
            pads = []
            for size, k, s in (
                (x.shape[-1], self.kernel_size[1], self.stride[1]),
                (x.shape[-2], self.kernel_size[0], self.stride[0]),
            ):
                total = max((-(-size // s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    for m in module.modules():
        if type(m) is nn.Conv2d and max(m.stride) > 1:
            m.__class__ = Conv2dSame  # same parameters, only forward differs
        elif isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3  # tf_ variants use TensorFlow's BN epsilon
