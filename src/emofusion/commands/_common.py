"""Argument helpers shared by the subcommands (not a subcommand itself: the leading underscore keeps
:mod:`emofusion.cli`'s discovery away). Cheap to import: `--help` imports every command module."""

from __future__ import annotations

import argparse

from emofusion.errors import ConfigError
from emofusion.layout import store_path


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The config options shared by the subcommands that read settings."""
    parser.add_argument("--config", metavar="FILE", help="config.yaml to read (validated; defaults filled)")
    parser.add_argument(
        "--config-json",
        metavar="JSON",
        help="config sections as a JSON object, merged over --config (what Snakemake rules pass)",
    )


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    """Options of how (not what) a fusion run computes: `emofusion train` and `emofusion evaluate`."""
    p.add_argument(
        "--data",
        choices=("auto", "memory", "lazy"),
        default="auto",
        help="features in memory, read lazily from the stores, or auto (in memory below 8 GiB)",
    )
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (lazy reads; 0 = none)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)")


def parse_stores(values: list[str], experiment: dict, defaults: dict[str, str] | None = None) -> dict[str, str]:
    """``{modality: path}`` from ``--store m=path`` options; a modality not given takes its path in ``defaults``
    (default: the standard store paths)."""
    given = {}
    for v in values:
        m, sep, path = v.partition("=")
        if not sep or not path:
            raise ConfigError(f"--store {v!r}: expected MODALITY=PATH")
        given[m] = path
    extra = sorted(set(given) - set(experiment["stores"]))
    if extra:
        raise ConfigError(
            f"--store {extra}: experiment {experiment['name']!r} reads only {sorted(experiment['stores'])}"
        )
    if defaults is None:
        defaults = {m: str(store_path(m, b)) for m, b in experiment["stores"].items()}
    return {m: given.get(m, defaults[m]) for m in experiment["stores"]}


def runtime(args: argparse.Namespace, device_name: str, *, tf32: bool = False):
    """(torch device, in-memory choice) from the runtime options; sets torch's CPU threads. ``tf32``: fusion.tf32
    (TF32 matmuls and convolutions on CUDA; exact float32 otherwise)."""
    import torch

    from emofusion.device import resolve_device

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    in_memory = {"auto": None, "memory": True, "lazy": False}[args.data]
    return resolve_device(device_name, key="fusion.device", tf32=tf32), in_memory
