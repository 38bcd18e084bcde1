"""Throughput switches of training and extraction: features on the device (fusion.device_data), bfloat16 autocast
(amp: bf16) and TF32 (features.tf32 / fusion.tf32). On the CPU the device path must give today's results bit for
bit; the flags must say what the config says."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from emofusion.config import validate_config
from emofusion.device import resolve_device, set_tf32
from emofusion.errors import ConfigError
from emofusion.features.backbones import backbone_config
from emofusion.fusion_data.batches import wants_device_data
from emofusion.fusion_data.predict import autocast_dtype
from emofusion.fusion_data.windows import Windowing
from emofusion.models import CCCLoss
from emofusion.training.experiments import experiment_section
from emofusion.training.loop import train_epoch
from emofusion.training.stage import build_fusion_model, train_run
from fusion_corpus import BACKBONES, experiment, make_corpus
from fusion_corpus import fold_data as assemble

CPU = torch.device("cpu")
SMALL = {"window": 32, "steps": 8, "pool": 2, "train_hop": 8}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    torch.set_num_threads(1)
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def fold_data(corpus, training, *, modalities=("visual", "audio", "text"), **kw):
    w = Windowing.from_training(training, key="t")
    return assemble(
        pd.read_parquet(corpus["manifest"]),
        labels=corpus["labels"],
        stores={m: corpus["stores"][m] for m in modalities},
        backbones={m: BACKBONES[m] for m in modalities},
        fold=0,
        windowing=w,
        **kw,
    )


@pytest.mark.parametrize(
    "training", [SMALL, {"window": 64, "steps": 8, "pool": 8}, {"window": 30, "steps": 30, "pool": 1, "hop": 20}]
)
def test_device_batches_equal_the_in_memory_batches_bit_for_bit(corpus, training):
    mem = fold_data(corpus, training, in_memory=True)
    dev = fold_data(corpus, training, device=CPU, device_data=True)
    assert mem.device is None and dev.device == CPU and dev.in_memory
    windows = mem.windows(mem.clips, 24)
    index = [list(range(i, min(i + 5, len(windows)))) for i in range(0, len(windows), 5)]
    for a, b in zip(mem.batches(windows, index), dev.batches(windows, index), strict=True):
        for m in mem.modalities:
            assert a["feats"][m].dtype == b["feats"][m].dtype == torch.float32
            assert torch.equal(a["feats"][m], b["feats"][m]), m
            assert torch.equal(a["masks"][m], b["masks"][m])
        assert torch.equal(a["target"], b["target"]) and torch.equal(a["target_mask"], b["target_mask"])
    assert not isinstance(dev.batches(windows, index), torch.utils.data.DataLoader)  # no loader, no workers
    assert len(dev.batches(windows, index)) == len(index)
    np.testing.assert_array_equal(mem.normaliser.mean["visual"], dev.normaliser.mean["visual"])


def test_device_data_auto_is_off_on_the_cpu_and_a_bad_mode_names_the_key(corpus):
    assert not wants_device_data("auto", CPU, 1, 0.5) and wants_device_data(True, CPU, 1 << 40, 0.5)
    assert fold_data(corpus, SMALL, device=CPU, device_data="auto").device is None
    with pytest.raises(ConfigError, match="fusion.device_data"):
        wants_device_data("yes", CPU, 1, 0.5)
    with pytest.raises(ConfigError, match="--data lazy"):
        fold_data(corpus, SMALL, device=CPU, device_data=True, in_memory=False)
    assert fold_data(corpus, SMALL, device=CPU, device_data="auto", in_memory=False).device is None


def _run(corpus, out, exp, *, device=CPU, **kw):
    return train_run(
        exp,
        fold=0,
        seed=0,
        out=out,
        manifest=pd.read_parquet(corpus["manifest"]),
        labels=corpus["labels"],
        stores={m: corpus["stores"][m] for m in exp["stores"]},
        device=device,
        **kw,
    )


@pytest.mark.parametrize(
    "model,training", [("rjca", SMALL), ("late_fusion", {"window": 30, "steps": 30, "pool": 1, "hop": 20})]
)
def test_device_data_trains_the_same_weights_as_in_memory(corpus, tmp_path, model, training):
    exp = experiment(model, model_options={"lstm_layers": 1, "head_hidden": 8}, epochs=2, **training)
    a = _run(corpus, tmp_path / "mem", exp, in_memory=True, device_data=False)
    b = _run(corpus, tmp_path / "dev", exp, device_data=True)
    sa, sb = (torch.load(tmp_path / n / "model.pt", weights_only=True)["state_dict"] for n in ("mem", "dev"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["best_val_ccc_mean"] == b["best_val_ccc_mean"]

    def log(name):
        return [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (tmp_path / name / "log.jsonl").read_text().splitlines()
        ]

    assert log("mem") == log("dev")


def test_amp_bf16_is_a_preset_option_and_trains_in_bfloat16_on_the_cpu(corpus):
    assert autocast_dtype("bf16", CPU) == torch.bfloat16 and autocast_dtype(True, CPU) is None
    assert autocast_dtype(False, torch.device("cuda")) is None
    assert autocast_dtype(True, torch.device("cuda")) == torch.float16
    fusion = validate_config({"fusion": {"presets": {"p": {"amp": "bf16"}}}})["fusion"]
    assert fusion["presets"]["p"]["amp"] == "bf16"
    with pytest.raises(ConfigError, match="amp"):
        validate_config({"fusion": {"presets": {"p": {"amp": "fp8"}}}})

    data = fold_data(corpus, SMALL, modalities=("visual", "audio"), in_memory=True)
    exp = experiment("rjca", model_options={"lstm_layers": 1, "head_hidden": 8}, **SMALL)
    windows = data.windows(data.clips_of("train"), 8)
    batch = data.batch(windows[:8])
    seen = []

    def losses(amp):
        torch.manual_seed(0)
        model = build_fusion_model(exp, data.width, data.windowing.steps)
        model.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        return train_epoch(
            model, [batch] * 3, opt=opt, scaler=scaler, loss_fn=CCCLoss(), device=CPU, amp=amp, grad_clip=1.0
        )

    full, half = losses(False), losses("bf16")
    assert seen[:3] == [torch.float32] * 3 and torch.bfloat16 in seen[3:]  # the autocast really ran
    assert np.isfinite(half).all()
    np.testing.assert_allclose(half, full, atol=0.05)  # bfloat16 keeps 8 bits: close, not equal
    assert half != full


def test_tf32_switch_sets_torch_flags_as_documented():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        resolve_device("cpu", key="fusion.device", tf32=True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        resolve_device("cpu", key="features.device")  # extraction: exact float32 unless asked
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_tf32_and_device_data_keys_have_defaults_and_reach_the_runs_params():
    cfg = validate_config({})
    assert cfg["features"]["tf32"] is False and cfg["fusion"]["tf32"] is False
    assert cfg["fusion"]["device_data"] == "auto" and cfg["fusion"]["device_memory_fraction"] == 0.5
    assert "tf32" not in backbone_config(cfg["features"], "visual", "fer")["features"]  # old params unchanged
    assert backbone_config({**cfg["features"], "tf32": True}, "audio", "egemaps")["features"]["tf32"] is True
    fusion = validate_config({"fusion": {"experiments": {"a": {"model": "rjca"}}}})["fusion"]
    assert set(experiment_section(fusion, "a")["fusion"]) == {"device", "experiments", "presets"}
    section = experiment_section({**fusion, "tf32": True, "device_data": False, "compile": True}, "a")
    assert section["fusion"]["tf32"] is True and section["fusion"]["device_data"] is False
    assert section["fusion"]["compile"] is True
    assert validate_config(section)["fusion"]["device_data"] is False
    with pytest.raises(ConfigError, match="device_data"):
        validate_config({"fusion": {"device_data": "sometimes"}})
    set_tf32(False)


def test_the_compiler_torch_compile_needs_depends_on_the_device(monkeypatch):
    """inductor builds C++ kernels on the CPU; Triton's launchers on CUDA are C: a node with only gcc can compile
    for CUDA and not for the CPU."""
    import shutil

    from emofusion.training.stage import compiler_for_torch_compile

    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if name == "gcc" else None)
    assert compiler_for_torch_compile("cuda") == "gcc" and compiler_for_torch_compile("cpu") is None
    monkeypatch.setenv("CXX", "g++-14")
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if name == "g++-14" else None)
    assert compiler_for_torch_compile("cpu") == "g++-14" and compiler_for_torch_compile("cuda") is None


def test_fusion_compile_without_a_compiler_names_the_key(corpus, tmp_path, monkeypatch):
    import emofusion.training.stage as stage

    monkeypatch.setattr(stage, "compiler_for_torch_compile", lambda device_type: None)
    exp = experiment("rjca", model_options={"lstm_layers": 1, "head_hidden": 8}, epochs=1, **SMALL)
    with pytest.raises(ConfigError, match="fusion.compile: false"):
        _run(corpus, tmp_path / "run", exp, compile_model=True)
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.slow
def test_fusion_compile_trains_compiled_and_saves_the_plain_module(corpus, tmp_path, monkeypatch):
    """fusion.compile: the optimisation steps go through torch.compile (inductor: about a minute to compile on two
    cores); model.pt holds the plain module's state (the eager run's keys, no `_orig_mod.`), evaluation reads it,
    and the compiled module computes what the eager one does on the trained weights (eval mode: no dropout)."""
    from emofusion.training.stage import compiler_for_torch_compile

    if compiler_for_torch_compile("cpu") is None:
        pytest.skip("no C++ compiler: torch.compile cannot build its kernels")
    compiled = []
    real_compile = torch.compile

    def spy(model, *args, **kwargs):
        compiled.append(type(model).__name__)
        return real_compile(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    exp = experiment("rjca", model_options={"lstm_layers": 1, "head_hidden": 8}, epochs=2, **SMALL)
    eager = _run(corpus, tmp_path / "eager", exp)
    info = _run(corpus, tmp_path / "compiled", exp, compile_model=True)
    assert compiled == ["RJCA"] and np.isfinite(info["best_val_ccc_mean"])
    assert len((tmp_path / "compiled" / "log.jsonl").read_text().splitlines()) == 2
    state = torch.load(tmp_path / "compiled" / "model.pt", weights_only=True)["state_dict"]
    eager_state = torch.load(tmp_path / "eager" / "model.pt", weights_only=True)["state_dict"]
    assert state.keys() == eager_state.keys() and np.isfinite(eager["best_val_ccc_mean"])

    data = fold_data(corpus, SMALL, modalities=tuple(exp["stores"]), in_memory=True)
    model = build_fusion_model(exp, data.width, data.windowing.steps)
    model.load_state_dict(state)
    model.eval()
    batch = data.batch(data.windows(data.clips, 8)[:4])
    with torch.no_grad():
        torch.testing.assert_close(
            real_compile(model)(batch["feats"], batch["masks"]),
            model(batch["feats"], batch["masks"]),
            rtol=1e-4,
            atol=1e-5,
        )


@pytest.mark.gpu
def test_device_data_on_cuda_gives_the_cpu_batches_and_trains(corpus, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cuda = torch.device("cuda")
    mem = fold_data(corpus, SMALL, in_memory=True)
    dev = fold_data(corpus, SMALL, device=cuda, device_data="auto")  # a few MB: fits
    assert dev.device == cuda and dev.features["visual"] is None  # the host copy is dropped
    windows = mem.windows(mem.clips, 24)
    a, b = mem.batch(windows), dev.batch(windows)
    for m in mem.modalities:
        assert b["feats"][m].device.type == "cuda"
        torch.testing.assert_close(b["feats"][m].cpu(), a["feats"][m], rtol=1e-6, atol=1e-6)
        assert torch.equal(b["masks"][m].cpu(), a["masks"][m])
    assert torch.equal(b["target"].cpu(), a["target"])
    exp = experiment("rjca", model_options={"lstm_layers": 1, "head_hidden": 8}, epochs=1, **SMALL)
    info = _run(corpus, tmp_path, exp, device=cuda)
    assert np.isfinite(info["best_val_ccc_mean"])
