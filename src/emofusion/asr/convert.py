"""CTranslate2 Whisper models (faster-whisper's format) into openai-whisper checkpoints, without a network.

A CTranslate2 model directory holds ``model.bin`` (every weight, serialised by ``ctranslate2.specs.ModelSpec``),
``config.json`` (alignment heads, suppressed tokens) and the tokenizer. :func:`read_ctranslate2_model` parses
``model.bin`` directly (binary format version 6: a header, then ``name, rank, shape, dtype, nbytes, data`` per
variable, then aliases), so no compiled library is needed and the weights come back bit-exact.
:func:`ctranslate2_to_whisper` maps them onto openai-whisper's parameter names:

* the fused self-attention projection ``linear_0`` (3·D rows) splits into query / key / value; the fused
  cross-attention ``linear_1`` (2·D rows) into key / value. Whisper's key projection has no bias (CTranslate2
  stores zeros there, which are dropped);
* layer norms ``gamma`` / ``beta`` become ``weight`` / ``bias``; ``linear_0`` / ``linear_1`` of a feed-forward
  block become ``mlp.0`` / ``mlp.2``;
* :class:`whisper.model.ModelDimensions` is read off the tensor shapes and the stored head counts.

The result is the dict openai-whisper's ``load_model`` reads (``{"dims": ..., "model_state_dict": ...}``), plus
``alignment_heads`` (the word-timestamp heads from config.json, which openai's checkpoints leave to a table keyed
by model name) and ``emofusion`` (where it came from). :func:`load_whisper_checkpoint` applies the heads.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import InputError

SUPPORTED_BINARY_VERSION = 6
# Order of CTranslate2's DataType enum (include/ctranslate2/types.h).
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class _Reader:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise InputError(f"{self.path} is truncated (CTranslate2 model.bin ends at byte {len(self.data)})")
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def string(self) -> str:
        (n,) = self.unpack("H")
        raw = bytes(self.take(n))
        return raw.rstrip(b"\0").decode("utf-8")

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise InputError(f"{self.path} is truncated (CTranslate2 model.bin ends at byte {len(self.data)})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def read_ctranslate2_model(model_dir: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, variables by name) of a CTranslate2 ``model.bin``; aliases resolved to their targets."""
    path = Path(model_dir) / "model.bin"
    if not path.is_file():
        raise InputError(f"{path} does not exist; a CTranslate2 model directory holds model.bin and config.json")
    raw = bytearray(path.read_bytes())  # writable, so torch.from_numpy shares it without copying or warning
    r = _Reader(memoryview(raw), path)
    (version,) = r.unpack("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise InputError(
            f"{path}: CTranslate2 binary format version {version} is not supported (expected "
            f"{SUPPORTED_BINARY_VERSION}); re-export the model with ctranslate2 >= 3"
        )
    spec = r.string()
    r.unpack("I")  # spec revision
    (count,) = r.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = r.string()
        (rank,) = r.unpack("B")
        shape = r.unpack("I" * rank) if rank else ()
        (type_id,) = r.unpack("B")
        (nbytes,) = r.unpack("I")
        if type_id >= len(_DTYPES):
            raise InputError(f"{path}: variable {name} has unknown CTranslate2 type id {type_id}")
        dtype = _DTYPES[type_id]
        buf = r.take(nbytes)
        if dtype == "bfloat16":  # numpy has no bfloat16: keep the raw 16 bits, widened to float32 below
            arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder("<"))
        variables[name] = arr.reshape(shape)
    (n_alias,) = r.unpack("I")
    for _ in range(n_alias):
        alias, target = r.string(), r.string()
        variables[alias] = variables[target]
    return spec, variables


def _count(variables: dict[str, np.ndarray], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    return 1 + max((int(m.group(1)) for k in variables if (m := pat.match(k))), default=-1)


def ctranslate2_to_whisper(model_dir: str | Path) -> dict[str, Any]:
    """An openai-whisper checkpoint dict (``dims``, ``model_state_dict``, ``alignment_heads``) from a CTranslate2
    Whisper model directory. Weights keep their stored precision (float16 for faster-whisper's models)."""
    import torch

    model_dir = Path(model_dir)
    spec, v = read_ctranslate2_model(model_dir)
    if spec != "WhisperSpec":
        raise InputError(f"{model_dir}/model.bin holds a CTranslate2 {spec}, not a Whisper model")
    quantized = sorted(
        k for k, a in v.items() if k.endswith("weight_scale") or (a.dtype in (np.int8, np.int16) and a.ndim > 0)
    )
    if quantized:
        raise InputError(
            f"{model_dir}/model.bin is a quantized (int8/int16) CTranslate2 model, which cannot be "
            "converted back to float weights; use asr.engine: faster-whisper with it, or a float16 "
            "or float32 export"
        )

    def t(name: str) -> torch.Tensor:
        if name not in v:
            raise InputError(f"{model_dir}/model.bin lacks variable {name}; not a Whisper model of the expected layout")
        return torch.from_numpy(np.ascontiguousarray(v[name]))

    def scalar(name: str) -> int:
        return int(t(name).item())

    n_audio_layer, n_text_layer = _count(v, "encoder"), _count(v, "decoder")
    conv1 = t("encoder/conv1/weight")
    emb = t("decoder/embeddings/weight")
    dims = {
        "n_mels": conv1.shape[1],
        "n_audio_ctx": t("encoder/position_encodings/encodings").shape[0],
        "n_audio_state": conv1.shape[0],
        "n_audio_head": scalar("encoder/num_heads"),
        "n_audio_layer": n_audio_layer,
        "n_vocab": emb.shape[0],
        "n_text_ctx": t("decoder/position_encodings/encodings").shape[0],
        "n_text_state": emb.shape[1],
        "n_text_head": scalar("decoder/num_heads"),
        "n_text_layer": n_text_layer,
    }
    sd: dict[str, torch.Tensor] = {}

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def linear(dst: str, src: str, *, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = t(f"{src}/bias")

    def fused(dsts: tuple[str, ...], src: str) -> None:
        """Split a fused projection (rows stacked in ``dsts`` order); keys have no bias in Whisper."""
        weights = t(f"{src}/weight").chunk(len(dsts), dim=0)
        biases = t(f"{src}/bias").chunk(len(dsts), dim=0)
        for dst, w, b in zip(dsts, weights, biases, strict=True):
            sd[f"{dst}.weight"] = w.clone()
            if not dst.endswith(".key"):
                sd[f"{dst}.bias"] = b.clone()

    def block(dst: str, src: str, *, cross: bool) -> None:
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        fused((f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"), f"{src}/self_attention/linear_0")
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        if cross:
            norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
            linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            fused((f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"), f"{src}/attention/linear_1")
            linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = t("encoder/position_encodings/encodings")
    for i in range(n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    norm("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = emb
    sd["decoder.positional_embedding"] = t("decoder/position_encodings/encodings")
    for i in range(n_text_layer):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    norm("decoder.ln", "decoder/layer_norm")

    heads = None
    config = model_dir / "config.json"
    if config.is_file():
        try:
            heads = json.loads(config.read_text()).get("alignment_heads")
        except json.JSONDecodeError as e:
            raise InputError(f"{config} is not valid JSON ({e})") from None
    return {
        "dims": dims,
        "model_state_dict": sd,
        "alignment_heads": [[int(a), int(b)] for a, b in heads] if heads else None,
    }


def read_whisper_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict of a checkpoint file (openai's or ours), loaded once with ``weights_only``; InputError naming the
    file when it is not one."""
    import torch

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or not {"dims", "model_state_dict"} <= set(ckpt):
            raise ValueError("no dims / model_state_dict")
    except Exception as e:  # torch.load raises UnpicklingError, RuntimeError, EOFError...; the file is the cause
        raise InputError(
            f"{path} is not a readable openai-whisper checkpoint ({type(e).__name__}: {e}); "
            "rebuild it or point asr.model at another one"
        ) from None
    return ckpt


def load_whisper_checkpoint(path: str | Path, *, device: str = "cpu"):
    """An openai-whisper model from a checkpoint file (openai's or ours), with our alignment heads if recorded.

    ``whisper.load_model(path)`` also loads our checkpoints; it falls back to the last half of the decoder's
    heads for word timing, where this applies the model's own heads."""
    return model_from_checkpoint_dict(read_whisper_checkpoint(path), device=device)


def model_from_checkpoint_dict(ckpt: dict[str, Any], *, device: str = "cpu"):
    """An openai-whisper model from a checkpoint dict (a file's, or :func:`ctranslate2_to_whisper`'s)."""
    import whisper

    model = whisper.model.Whisper(whisper.model.ModelDimensions(**ckpt["dims"]))
    model.load_state_dict(ckpt["model_state_dict"])
    return apply_alignment_heads(model, ckpt.get("alignment_heads")).to(device)


def apply_alignment_heads(model, heads: list[list[int]] | None):
    """Set the cross-attention heads used for word timestamps, given as (layer, head) pairs."""
    import torch

    if heads:
        mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model
