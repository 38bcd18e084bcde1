"""A run's model and set-up: seeds, the experiment's network for the stores' widths, the compiler torch.compile
needs."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from emofusion.errors import ConfigError


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (1 << 32))  # noqa: NPY002  (third-party code may draw from the legacy global RNG)
    torch.manual_seed(seed)


def build_fusion_model(experiment: Mapping[str, Any], dims: Mapping[str, int], steps: int):
    """The experiment's model for these store widths, ``seq_len`` = the windowing's steps."""
    from emofusion.models import build_config, build_model

    key = f"fusion.experiments.{experiment['name']}"
    options = dict(experiment["model_options"])
    if "seq_len" in options and int(options["seq_len"]) != steps:
        raise ConfigError(
            f"{key}.model_options.seq_len is {options['seq_len']} but the windowing gives {steps} steps "
            f"per window ({key}.training.steps); drop seq_len or make them equal"
        )
    options.pop("seq_len", None)
    if "dims" in options:
        raise ConfigError(f"{key}.model_options.dims: widths come from the feature stores; remove it")
    try:
        config = build_config(experiment["model"], dims=dict(dims), seq_len=steps, **options)
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None
    if config.n_targets != 2:
        raise ConfigError(
            f"{key}.model_options.n_targets is {config.n_targets}: runs train a valence and an arousal "
            "head together (set n_targets: 2; for rjcma this is its two-head option)"
        )
    return build_model(experiment["model"], **config.to_dict())


def compiler_for_torch_compile(device_type: str = "cpu") -> str | None:
    """The compiler torch.compile's kernels would be built with, or None: inductor's C++ kernels on the CPU ($CXX,
    g++, clang++), Triton's C launchers on CUDA ($CC, gcc, clang)."""
    import shutil

    env, names = ("CC", ("gcc", "clang", "cc")) if device_type == "cuda" else ("CXX", ("g++", "clang++", "c++"))
    for name in (os.environ.get(env), *names):
        if name and shutil.which(name):
            return name
    return None
