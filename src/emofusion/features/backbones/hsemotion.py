"""``hsemotion``: EfficientNet-B0 AffectNet models (HSEmotion / EmotiEffLib, e.g. ``enet_b0_8_va_mtl``) from a
local weight file the user downloaded (``features.visual.backbones.hsemotion.weights``).
"""

from __future__ import annotations

from emofusion.features.backbones._registry import register, sha256_files
from emofusion.features.backbones._visual import IMAGENET_MEAN, IMAGENET_STD, TorchVisual, normalise, to_float
from emofusion.features.backbones.nets.state_dicts import load_by_order, load_state_dict
from emofusion.features.backbones.nets.tf_same_padding import tf_same_convs


@register
class HSEmotion(TorchVisual):
    """EfficientNet-B0 AffectNet models (HSEmotion / EmotiEffLib ``enet_b0_8_va_mtl``, ``enet_b0_8_best_vgaf``...).

    ``weights``: a state dict (timm or torchvision tensor names) of an EfficientNet-B0 with an ``num_classes``-way
    head (HSEmotion's .pt files are whole pickled timm models: save their ``state_dict()`` once, see docs/stages.md).
    Features: the 1280-d pooled penultimate layer, with the head's outputs appended when ``logits`` is true."""

    name = "hsemotion"
    licence = "Apache-2.0 (HSEmotion / EmotiEffLib code and weights, user-downloaded; torchvision BSD-3-Clause)"
    amp = True
    offline = False
    packages = ("torchvision",)
    native_rate = 0.0
    timeline = "one row per video frame from that frame's aligned face crop (RGB, ImageNet-normalised)"

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        self.path = self.weight_path("weights")  # before the heavy imports: a missing file fails at once
        import torch.nn as nn
        from torchvision.models import efficientnet_b0

        self.input_size = int(self.option("input_size", 224))
        state = load_state_dict(self.path, key=self.key("weights"))
        head = [k for k in state if k.endswith("weight") and state[k].ndim == 2]
        classes = int(state[head[-1]].shape[0]) if head else int(self.option("num_classes", 8))
        net = efficientnet_b0(weights=None, num_classes=classes)
        if self.option("tf_padding", True):
            tf_same_convs(net)
        load_by_order(net, state, key=self.key("weights"), path=self.path)
        self.head = net.classifier[1]
        net.classifier = nn.Identity()
        self.append_logits = bool(self.option("logits", False))
        self.width = 1280 + (classes if self.append_logits else 0)
        self._finish(net)
        self.head = self.head.to(self.device).eval()

    def weights(self):
        return str(self.path), sha256_files([self.path])

    def _forward(self, crops):
        import torch

        x = normalise(to_float(crops, self.input_size, grey=False), IMAGENET_MEAN, IMAGENET_STD)
        features = self.net(x)
        return torch.cat([features, self.head(features)], 1) if self.append_logits else features
