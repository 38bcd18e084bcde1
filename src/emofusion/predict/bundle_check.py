"""What a bundle must be before anything in it is used: its two members, each refused by its size before it is
read (a folder, or a tar read by name into memory, nothing extracted), and a recipe predict can use (every key it
reads present and of its type, named when not).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

from emofusion.errors import InputError

MEMBERS = ("bundle.json", "model.pt")
# Each member's size limit, checked before it is read: bundle.json is tens of kB, model.pt a fusion model's weights.
MEMBER_CAPS = {"bundle.json": 1 << 20, "model.pt": 1 << 30}


def too_big(path: Path, name: str, size: int) -> InputError:
    return InputError(
        f"bundle {path}: {name} is {size} bytes, more than the {MEMBER_CAPS[name]} an emofusion bundle's {name} may "
        "hold; it was not written by `emofusion export`: export the run again"
    )


def bundle_members(path: Path) -> dict[str, bytes]:
    """bundle.json and model.pt of a bundle folder or tar, each refused by its size before it is read."""
    if path.is_dir():
        missing = [m for m in MEMBERS if not (path / m).is_file()]
        if missing:
            raise InputError(f"bundle {path} lacks {', '.join(missing)}; export it again (`emofusion export`)")
        for m in MEMBERS:
            if (size := (path / m).stat().st_size) > MEMBER_CAPS[m]:
                raise too_big(path, m, size)
        return {m: (path / m).read_bytes() for m in MEMBERS}
    try:
        with tarfile.open(path, "r:") as tar:  # members read by name into memory: nothing is extracted to disk
            found = {}
            for m in MEMBERS:
                try:
                    member = tar.getmember(m)
                except KeyError:
                    raise InputError(f"bundle {path} lacks {m}; export it again (`emofusion export`)") from None
                fh = tar.extractfile(member) if member.isfile() else None
                if fh is None:
                    raise InputError(f"bundle {path}: {m} is not a regular file; export it again")
                # The header's size, before reading: a sparse member of a small tar can expand to gigabytes.
                if member.size > MEMBER_CAPS[m]:
                    raise too_big(path, m, member.size)
                found[m] = fh.read(MEMBER_CAPS[m] + 1)
                if len(found[m]) > MEMBER_CAPS[m]:
                    raise too_big(path, m, len(found[m]))
            return found
    except (tarfile.TarError, OSError) as e:
        raise InputError(
            f"bundle {path} cannot be read ({e}); pass a folder or .tar written by `emofusion export`"
        ) from None


# What a recipe must hold for predict to use it: key -> type (a bundle.json edited by hand or damaged is refused
# with the key named, not with a KeyError deep in predict).
RECIPE_KEYS: dict[str, type] = {
    "experiment": str,
    "model": str,
    "fold": int,
    "seed": int,
    "modalities": list,
    "experiment_config": dict,
    "windowing": dict,
    "smoothing": dict,
    "stages": dict,
    "backbones": dict,
}
BACKBONE_KEYS: dict[str, type] = {
    "name": str,
    "options": dict,
    "weights_sha256": str,
    "weights_source": object,  # shown, not used
    "licence": object,
}
STAGES_OF = {"visual": ("faces",), "audio": ("audio",), "text": ("audio", "asr")}  # the stages a modality reads


def kind_of(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def check_recipe(recipe: Any, where: str) -> dict[str, Any]:
    """``recipe`` when predict can use it; else an InputError naming the key (``where``: the bundle, for the
    message)."""
    from emofusion.features.backbones import MODALITIES

    def bad(key: str, what: str) -> InputError:
        return InputError(f"{where}: bundle.json's {key} {what}; the bundle was altered or damaged, export it again")

    def typed(mapping: dict, keys: dict, prefix: str) -> None:
        for key, kind in keys.items():
            if key not in mapping:
                raise bad(f"{prefix}.{key}", "is missing")
            value = mapping[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise bad(f"{prefix}.{key}", f"is {kind_of(value)}, not {kind_of(kind())}")

    if not isinstance(recipe, dict):
        raise bad("recipe", "is missing" if recipe is None else f"is {kind_of(recipe)}, not an object")
    typed(recipe, RECIPE_KEYS, "recipe")
    modalities = recipe["modalities"]
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities or len(set(modalities)) != len(modalities):
        raise bad(
            "recipe.modalities",
            f"is {modalities!r}; a model reads one or more distinct modalities of {', '.join(MODALITIES)}",
        )
    for m in modalities:
        entry = recipe["backbones"].get(m)
        if not isinstance(entry, dict):
            raise bad(f"recipe.backbones.{m}", "is missing" if entry is None else f"is {kind_of(entry)}, not an object")
        typed(entry, BACKBONE_KEYS, f"recipe.backbones.{m}")
        for stage in STAGES_OF[m]:
            if not isinstance(recipe["stages"].get(stage), dict):
                raise bad(f"recipe.stages.{stage}", f"is missing (the {m} input needs it)")
    if not isinstance(recipe["experiment_config"].get("training"), dict):
        raise bad("recipe.experiment_config.training", "is missing")
    return recipe
