"""``hf``: a Hugging Face image model from a local directory (transformers, ``local_files_only``)."""

from __future__ import annotations

import json

from emofusion.errors import ConfigError
from emofusion.features.backbones._registry import register, sha256_files
from emofusion.features.backbones._visual import IMAGENET_MEAN, IMAGENET_STD, TorchVisual, normalise, to_float


@register
class HuggingFaceImage(TorchVisual):
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
        out = self.net(pixel_values=normalise(to_float(crops, self.input_size, grey=False), self.mean, self.std))
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            return out.last_hidden_state.mean(1)
        return pooled.flatten(1)  # (B, D) or (B, D, 1, 1) for conv models
