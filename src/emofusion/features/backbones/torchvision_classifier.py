"""``torchvision``: any torchvision image classifier by name with a local state dict; features = the input of its
last linear layer.
"""

from __future__ import annotations

from emofusion.errors import ConfigError
from emofusion.features.backbones._registry import register, sha256_files
from emofusion.features.backbones._visual import IMAGENET_MEAN, IMAGENET_STD, TorchVisual, normalise, to_float
from emofusion.features.backbones.nets.state_dicts import load_state_dict


def _strip_last_linear(net) -> int:
    """Replace the module's last nn.Linear (its classifier) by Identity; returns that layer's input width."""
    import torch.nn as nn

    last = None
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                last = (parent, name, child)
    if last is None:
        raise ConfigError("the torchvision model has no linear classifier to take the features before")
    parent, name, child = last
    setattr(parent, name, nn.Identity())
    return int(child.in_features)


@register
class TorchvisionModel(TorchVisual):
    """Any torchvision image classifier (``model``: a name of torchvision.models.list_models(), ``weights``: a
    local state dict); features = the input of its last linear layer (e.g. 512 for resnet18)."""

    name = "torchvision"
    licence = "BSD-3-Clause (torchvision code); weights: the licence of the file the user sets"
    amp = True
    offline = False
    packages = ("torchvision",)
    native_rate = 0.0
    timeline = "one row per video frame from that frame's aligned face crop (RGB, ImageNet-normalised)"

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        self.path = self.weight_path("weights")
        import torchvision

        model = self.option("model")
        names = torchvision.models.list_models(module=torchvision.models)
        if model not in names:
            raise ConfigError(
                f"{self.key('model')} is {model!r}; set it to a torchvision classification model, "
                f"e.g. {', '.join(n for n in ('resnet18', 'resnet50', 'efficientnet_b0') if n in names)}"
            )
        self.model = model
        self.input_size = int(self.option("input_size", 224))
        state = load_state_dict(self.path, key=self.key("weights"))
        head = [k for k in state if k.endswith("weight") and state[k].ndim == 2]
        classes = int(state[head[-1]].shape[0]) if head else 1000
        net = torchvision.models.get_model(model, weights=None, num_classes=classes)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ConfigError(
                f"{self.key('weights')}: {self.path} does not fit torchvision {model} ({str(e)[:300]})"
            ) from None
        self.width = _strip_last_linear(net)
        self._finish(net)

    def weights(self):
        return f"torchvision:{self.model}:{self.path}", sha256_files([self.path])

    def _forward(self, crops):
        return self.net(normalise(to_float(crops, self.input_size, grey=False), IMAGENET_MEAN, IMAGENET_STD))
