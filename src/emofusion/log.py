"""The package logger. Commands log to stderr; Snakemake redirects it into each rule's log file."""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("emofusion")


def setup_logging(verbose: bool = False) -> None:
    """Configure the package logger once (idempotent)."""
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def progress(iterable=None, **kwargs):
    """tqdm progress bar that is silent when stderr is not a terminal (CI, Snakemake logs)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not sys.stderr.isatty())
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
