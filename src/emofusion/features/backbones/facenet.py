"""``facenet``: InceptionResnetV1 (VGGFace2) of facenet-pytorch from a local weight file the user downloaded
(``features.visual.backbones.facenet.weights``).
"""

from __future__ import annotations

from emofusion.errors import ConfigError
from emofusion.features.backbones._registry import register, sha256_files
from emofusion.features.backbones._visual import TorchVisual, to_float
from emofusion.features.backbones.nets.state_dicts import load_state_dict


@register
class FaceNet(TorchVisual):
    """InceptionResnetV1 of facenet-pytorch (VGGFace2 or CASIA-WebFace weights, a local state dict file):
    the 512-d L2-normalised face embedding."""

    name = "facenet"
    licence = "MIT (facenet-pytorch==2.6.0 code; VGGFace2 weights user-downloaded, see timesler/facenet-pytorch)"
    amp = True
    offline = False
    packages = ("facenet-pytorch",)
    native_rate = 0.0
    timeline = "one row per video frame from that frame's aligned face crop (160x160 RGB)"
    input_size = 160
    width = 512

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        self.path = self.weight_path("weights")
        from facenet_pytorch import InceptionResnetV1

        state = load_state_dict(self.path, key=self.key("weights"))
        classes = int(state["logits.weight"].shape[0]) if "logits.weight" in state else None
        net = InceptionResnetV1(pretrained=None, classify=False, num_classes=classes)
        try:
            net.load_state_dict(state, strict=classes is not None)
        except RuntimeError as e:
            raise ConfigError(
                f"{self.key('weights')}: {self.path} is not an InceptionResnetV1 state dict ({str(e)[:300]})"
            ) from None
        self._finish(net)

    def weights(self):
        return str(self.path), sha256_files([self.path])

    def _forward(self, crops):
        # facenet-pytorch's fixed_image_standardization
        x = to_float(crops, self.input_size, grey=False).mul_(255.0).sub_(127.5).div_(128.0)
        return self.net(x)
