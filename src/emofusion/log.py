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


# Where stderr is not a terminal (Snakemake's job logs, Slurm, a pipe), long work logs a progress line this often
# instead of drawing a bar, so a slow job is told from a stuck one; work shorter than that logs nothing.
LOG_EVERY_S = 15.0


class _LogLines:
    """A file for tqdm that sends each status line it writes to the package logger (once per count: tqdm
    repeats the last one when it closes)."""

    def __init__(self) -> None:
        self._last = ""

    def write(self, text: str) -> None:
        for line in text.replace("\r", "\n").split("\n"):
            count = line.split("[")[0].strip()
            if count and count != self._last:
                self._last = count
                logger.info("progress: %s", line.strip())

    def flush(self) -> None:
        pass


def progress(iterable=None, **kwargs):
    """A progress report of long work: a tqdm bar on a terminal; elsewhere a log line every ``LOG_EVERY_S``
    seconds (done/total, time elapsed and left, rate), the first after that long, and one at the end."""
    from tqdm.auto import tqdm

    if kwargs.pop("disable", False):
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        kwargs.setdefault("leave", False)
        return tqdm(iterable, **kwargs)
    return tqdm(
        iterable,
        file=_LogLines(),
        mininterval=LOG_EVERY_S,
        delay=LOG_EVERY_S,
        leave=True,
        bar_format="{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed} elapsed, {remaining} left, {rate_fmt}]",
        **kwargs,
    )
