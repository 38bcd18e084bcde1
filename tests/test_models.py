"""Fusion models: every registered model with different widths per modality, plus the shared blocks checked
against MODELS.md's equations written out here."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from emofusion.errors import ConfigError
from emofusion.models import (
    VARIANTS,
    build_config,
    build_model,
    ccc_loss,
    list_models,
    load_checkpoint,
    read_checkpoint,
    register_model,
    save_checkpoint,
)
from emofusion.models.blocks import (
    AudioGuidedVisualAttention,
    CandidateGate,
    DCAGate,
    JointCrossAttention,
    MaskedBatchNorm1d,
)
from emofusion.models.registry import FusionModel

WIDTHS = {"visual": 17, "audio": 23, "text": 11}
B, L = 3, 6
BLOCK_MODELS = ("jca", "rjca", "dca", "grjca", "hgrjca", "rjcma")
ALL_MODELS = ("ca", "dca", "early_fusion", "grjca", "hgrjca", "jca", "late_fusion", "rjca", "rjcma", "unimodal")
TINY_TCN = {"visual": [8, 7], "audio": [6, 5], "text": [4, 9]}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads cost more than they save (about 30 s against 5 s on two busy cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_config(name: str, modalities: tuple[str, ...] | None = None, **overrides) -> dict:
    """Small widths so the whole file runs in seconds; each model sees the widths it accepts."""
    if name in ("jca", "rjca", "dca", "grjca", "hgrjca"):
        mods = modalities or ("visual", "audio")
        cfg = {"fusion_width": 8, "head_hidden": 8}
    elif name == "rjcma":
        mods = modalities or ("visual", "audio", "text")
        cfg = {"tcn_channels": {m: TINY_TCN[m] for m in mods}}
    elif name == "ca":
        mods = modalities or ("visual", "audio")
        cfg = {"width": 8, "head_hidden": 8}
    else:
        mods = modalities or ("visual", "audio", "text")
        cfg = {"width": 8, "head_hidden": 8, **({"modality": "audio"} if name == "unimodal" else {})}
    return {"dims": {m: WIDTHS[m] for m in mods}, "seq_len": L, **cfg, **overrides}


def make(name: str, seed: int = 0, **overrides) -> FusionModel:
    torch.manual_seed(seed)
    return build_model(name, **tiny_config(name, **overrides))


def inputs(seed: int = 1, batch: int = B) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, L, d, generator=g) for m, d in WIDTHS.items()}


def padding_masks() -> dict[str, Tensor]:
    """Window 1 ends in two padded steps (every modality); window 2 misses a face at step 2 (visual only)."""
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[1, -2:] = False
    masks = {m: valid.clone() for m in WIDTHS}
    masks["visual"][2, 2] = False
    return masks


def test_registry_lists_every_model_and_rejects_duplicates():
    assert tuple(list_models()) == ALL_MODELS
    assert set(VARIANTS) <= set(list_models(variants=True))
    with pytest.raises(ValueError, match="already registered"):
        register_model("rjca")(type("Other", (FusionModel,), {}))
    with pytest.raises(ValueError, match="already a variant"):
        register_model("rjca_published")(type("Other", (FusionModel,), {}))
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("nope", dims={"visual": 4})
    with pytest.raises(ConfigError, match="unknown config keys"):
        build_model("rjca", dims={"visual": 4, "audio": 4}, num_iters=3)


def test_variants_are_config_entries():
    dims = {"visual": 4, "audio": 4, "text": 4}
    assert build_config("rjca_published", dims=dims).num_iter == 1
    paper = build_config("rjcma_paper", dims=dims)
    assert (paper.num_iter, paper.joint_projection, paper.n_targets) == (3, True, 1)
    assert build_config("rjcma_paper", dims=dims, num_iter=4).num_iter == 4  # the caller overrides the variant
    assert build_config("jca", dims=dims).num_iter == 1 and build_config("rjca", dims=dims).num_iter == 2
    model = build_model("unimodal_text", dims=dims)
    assert model.config.modality == "text" and model.model_name == "unimodal"
    for variant, (model_name, _) in VARIANTS.items():
        assert model_name in list_models(), variant


def test_config_is_frozen_hashable_and_round_trips():
    cfg = build_config("rjcma", dims={"text": 11, "visual": 17, "audio": 23}, tcn_channels=TINY_TCN)
    assert cfg.modalities == ("visual", "audio", "text")  # canonical order whatever the dict's order
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_iter = 3  # type: ignore[misc]
    hash(cfg)
    plain = cfg.to_dict()
    assert plain["dims"] == {"visual": 17, "audio": 23, "text": 11} and plain["tcn_channels"]["visual"] == [8, 7]
    assert type(cfg)(**plain) == cfg


@pytest.mark.parametrize("name", ALL_MODELS)
def test_output_shape_and_finite(name):
    model = make(name).eval()
    out = model(inputs(), padding_masks())
    assert out.shape == (B, L, 2)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_gradients_reach_every_parameter(name):
    model = make(name).train()
    torch.manual_seed(2)
    model(inputs(), padding_masks()).square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_padded_values_do_not_reach_the_output(name, train):
    model = make(name).train(train)
    masks = padding_masks()
    feats = inputs()
    changed = {m: torch.where(masks[m].unsqueeze(-1), x, 1e3 * torch.randn_like(x)) for m, x in feats.items()}
    changed["audio"][1, -1, 0] = float("nan")
    changed["visual"][2, 2, :] = float("inf")

    def run(f):
        torch.manual_seed(3)  # same dropout draws in train mode
        return model(f, masks)

    reference = run(feats)
    out = run(changed)
    # Values at invalid steps never reach the output; outputs at valid steps (and even padded ones) agree.
    valid = model.any_valid({m: masks[m] for m in model.modalities})
    torch.testing.assert_close(out[valid], reference[valid])
    torch.testing.assert_close(out, reference)
    # Control: a change at a valid step of a used modality does change the output.
    m = model.modalities[0]
    poked = {k: v.clone() for k, v in feats.items()}
    poked[m][0, 1] += 1.0
    assert not torch.allclose(run(poked), reference)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_seeded_determinism(name):
    def run(init_seed: int) -> Tensor:
        model = make(name, seed=init_seed).train()
        torch.manual_seed(5)
        return model(inputs(), padding_masks())

    torch.testing.assert_close(run(0), run(0), rtol=0, atol=0)
    assert not torch.allclose(run(0), run(1))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_checkpoint_round_trip(name, tmp_path):
    model = make(name).eval()
    path = save_checkpoint(tmp_path / "ckpt" / f"{name}.pt", model, extra={"epoch": 3, "ccc": [0.5, 0.25]}, seed=7)
    raw = torch.load(path, weights_only=True)
    assert raw["model"] == name and raw["extra"] == {"epoch": 3, "ccc": [0.5, 0.25]}
    assert raw["provenance"]["seed"] == 7 and raw["provenance"]["config"]["model"] == name
    assert read_checkpoint(path)["config"] == model.config.to_dict()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    loaded = load_checkpoint(path)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    torch.testing.assert_close(loaded(inputs(), padding_masks()), model(inputs(), padding_masks()), rtol=0, atol=0)


def test_checkpoint_rejects_extra_that_weights_only_cannot_load(tmp_path):
    with pytest.raises(TypeError, match="weights_only"):
        save_checkpoint(tmp_path / "x.pt", make("rjca"), extra={"when": object()})
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("num_iter", [1, 2, 3, 4])
@pytest.mark.parametrize("name", BLOCK_MODELS)
def test_num_iter(name, num_iter):
    model = make(name, num_iter=num_iter).eval()
    assert len(model.block.layers) == num_iter
    out = model(inputs(), padding_masks())
    assert out.shape == (B, L, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "name,mods",
    [
        ("rjca", ("audio", "text")),
        ("dca", ("visual", "text")),
        ("grjca", ("visual", "audio", "text")),
        ("rjcma", ("visual", "text")),
        ("ca", ("audio", "text")),
        ("early_fusion", ("text",)),
    ],
)
def test_modality_subsets(name, mods):
    model = make(name, modalities=mods).eval()
    assert model.modalities == mods
    assert model(inputs(), None).shape == (B, L, 2)


def test_rejects_wrong_inputs():
    model = make("rjca").eval()
    with pytest.raises(KeyError, match="audio"):
        model({"visual": inputs()["visual"]})
    with pytest.raises(ValueError, match="seq_len"):
        model({m: x[:, :4] for m, x in inputs().items()})
    with pytest.raises(ValueError, match=r"\(B, L, 23\)"):
        model({"visual": inputs()["visual"], "audio": inputs()["text"]})
    with pytest.raises(ConfigError, match="takes 2 modalities"):
        make("ca", modalities=("visual", "audio", "text"))
    assert make("unimodal").modalities == ("audio",)
    # Baselines have no length baked in.
    assert make("late_fusion")({m: x[:, :4] for m, x in inputs().items()}).shape == (B, 4, 2)


def test_rjcma_options():
    published = make("rjcma")
    assert isinstance(published.block.layers[0].joint, nn.Identity)  # the published code's unprojected J
    paper = make("rjcma", num_iter=3, joint_projection=True)
    assert isinstance(paper.block.layers[0].joint, nn.Linear) and len(paper.block.layers) == 3
    one = make("rjcma", n_targets=1).eval()
    out = one(inputs(), padding_masks())
    assert out.shape == (B, L, 1) and out.abs().max() < 1  # tanh output


def test_grjca_and_hgrjca_with_one_iteration_equal_dca():
    dca = make("dca", num_iter=1).eval()
    feats, masks = inputs(), padding_masks()
    expected = dca(feats, masks)
    state = dca.state_dict()
    for name in ("grjca", "hgrjca"):
        other = make(name, seed=9, num_iter=1).eval()
        assert not torch.allclose(other(feats, masks), expected)
        mapped = {}
        for key, value in state.items():
            if key.startswith("gates.") and name == "grjca" and key.endswith("proj.weight"):
                value = torch.cat([torch.zeros_like(value), value], dim=1)  # the gate ignores X^(0), as DCA's
            if key.startswith("gates.") and name == "hgrjca":
                key = key.replace(".proj.", ".low.0.proj.")
            mapped[key] = value
        other.load_state_dict(mapped)
        torch.testing.assert_close(other(feats, masks), expected)


def test_dca_gate_selects_one_candidate_as_tau_goes_to_zero():
    torch.manual_seed(0)
    gate = DCAGate(dim=5, tau=1e-4)
    x, x_att = torch.randn(2, 7, 5), torch.randn(2, 7, 5)
    out = gate([x, x_att])
    pick = gate.proj(x_att).argmax(-1, keepdim=True)  # (2, 7, 1): which candidate the logits prefer
    torch.testing.assert_close(out, torch.where(pick == 0, x, x_att).relu())
    assert 0 < (pick == 0).float().mean() < 1  # both candidates are chosen somewhere: not a constant gate
    soft = DCAGate(dim=5, tau=10.0)
    soft.load_state_dict(gate.state_dict())
    assert not torch.allclose(soft([x, x_att]), out)


def test_grjca_gate_weights_are_a_softmax_over_all_candidates():
    torch.manual_seed(0)
    gate = CandidateGate(dim=4, n_candidates=3, tau=0.1, sees="all")
    cands = [torch.randn(2, 5, 4) for _ in range(3)]
    w = gate.weights(cands)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 5))
    manual = torch.softmax((torch.cat(cands, -1) @ gate.proj.weight.T + gate.proj.bias) / 0.1, -1)
    torch.testing.assert_close(w, manual)
    torch.testing.assert_close(gate(cands), sum(w[..., i : i + 1] * c for i, c in enumerate(cands)).relu())


def direct_block_iteration(layer: nn.Module, xs: list[Tensor]) -> list[Tensor]:
    """MODELS.md's equations, written independently of the module's forward (eval mode: no dropout)."""
    J = torch.cat(xs, dim=-1)
    d = J.shape[-1]
    Jp = J @ layer.joint.weight.T + layer.joint.bias if isinstance(layer.joint, nn.Linear) else J
    out = []
    for m, X in enumerate(xs):
        Wk, bk = layer.key[m].weight, layer.key[m].bias
        K = torch.einsum("ts,bsd->bdt", Wk, X) + bk  # K[b, :, t] = sum_s Wk[t, s] X[b, s, :] + bk[t]
        C = torch.tanh(torch.einsum("bdt,bte->bde", K, Jp) / math.sqrt(d))
        V = X @ layer.value[m].weight.T + layer.value[m].bias
        H = torch.relu(torch.tanh(torch.einsum("btd,bde->bte", V, C)))
        out.append(X + torch.relu(H @ layer.out[m].weight.T + layer.out[m].bias))
    return out


@pytest.mark.parametrize("joint_projection", [True, False])
@pytest.mark.parametrize("widths", [(5, 3), (5, 3, 4)], ids=["2-way", "3-way"])
def test_block_matches_the_equations(widths, joint_projection):
    torch.manual_seed(0)
    block = JointCrossAttention(dims=widths, seq_len=4, num_iter=2, joint_projection=joint_projection).eval()
    for p in block.parameters():  # non-trivial biases and weights
        nn.init.normal_(p, std=0.5)
    xs = [torch.randn(2, 4, w) for w in widths]
    states = block(xs)
    expected = xs
    for layer, state in zip(block.layers, states, strict=True):
        expected = direct_block_iteration(layer, expected)
        for got, want in zip(state, expected, strict=True):
            torch.testing.assert_close(got, want)
    assert not torch.allclose(states[-1][0], xs[0])


def test_block_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    block = JointCrossAttention(dims=(5, 3), seq_len=4, num_iter=1)
    xs = [torch.randn(2, 4, 5), torch.randn(2, 4, 3)]
    assert not torch.allclose(block.train()(xs)[0][0], block.eval()(xs)[0][0])


@pytest.mark.parametrize("faithful", [False, True])
def test_audio_guided_visual_attention(faithful):
    torch.manual_seed(0)
    P, C = 4, 3
    attn = AudioGuidedVisualAttention(
        positions=P, channels=C, audio_dim=5, out_dim=6, embed_dim=7, score_dim=P, faithful_reshape=faithful
    ).eval()
    maps = torch.randn(2, L, P, C)  # position-major ground truth
    flat = maps.transpose(2, 3).reshape(2, L, C * P)  # channel-major flatten, as (C, H, W).flatten()
    a = torch.randn(2, L, 5)
    seen = flat.reshape(2, L, P, C) if faithful else maps  # what each mode reads as position vectors
    score = attn.score(
        torch.tanh(
            attn.visual_score(attn.visual_embed(seen).relu())
            + attn.audio_score(attn.audio_embed(a).relu()).unsqueeze(2)
        )
    ).squeeze(-1)
    expected = attn.out((score.softmax(-1).unsqueeze(-1) * seen).sum(2))
    torch.testing.assert_close(attn(flat, a), expected)
    if not faithful:
        # Correct reading: permuting positions of the map (same permutation of the flatten) leaves it unchanged.
        perm = torch.randperm(P)
        torch.testing.assert_close(attn(maps[:, :, perm].transpose(2, 3).reshape(2, L, C * P), a), expected)


def direct_spatial_attention(
    attn: AudioGuidedVisualAttention, flat: Tensor, a: Tensor, *, faithful_reshape: bool, audio_per_position: bool
) -> np.ndarray:
    """MODELS.md's audio-guided attention written out with numpy in float64, one index at a time where it matters.

    flat (B, L, C * P) is the channel-major flatten of (C, H, W): position p, channel c sits at c * P + p; the
    published code reads it as if position-major (p * C + c). Score unit k of position p gets
    ``(W_v relu(U v_p))_k + (W_a relu(U' a))_k`` (shared) or ``... + (W_a relu(U' a))_p`` (published broadcast).
    """

    def w(layer):
        return layer.weight.detach().double().numpy()

    def b(layer):
        return layer.bias.detach().double().numpy()

    x, a = flat.double().numpy(), a.double().numpy()
    D = x.shape[-1]
    P = attn.positions
    C = D // P
    idx = np.arange(P)[:, None] * C + np.arange(C) if faithful_reshape else np.arange(C) * P + np.arange(P)[:, None]
    maps = x[:, :, idx]  # (B, L, P, C): maps[..., p, c] = x[..., idx[p, c]]
    u = np.maximum(maps @ w(attn.visual_embed).T + b(attn.visual_embed), 0)  # (B, L, P, E)
    content = u @ w(attn.visual_score).T  # (B, L, P, S)
    audio = np.maximum(a @ w(attn.audio_embed).T + b(attn.audio_embed), 0) @ w(attn.audio_score).T  # (B, L, S)
    hidden = np.empty_like(content)
    for p in range(P):
        hidden[:, :, p, :] = content[:, :, p, :] + (audio[:, :, p, None] if audio_per_position else audio)
    score = np.tanh(hidden) @ w(attn.score)[0]  # (B, L, P)
    alpha = np.exp(score - score.max(-1, keepdims=True))
    alpha /= alpha.sum(-1, keepdims=True)
    pooled = np.einsum("blp,blpc->blc", alpha, maps)
    return pooled @ w(attn.out).T + b(attn.out)


@pytest.mark.parametrize("faithful_reshape", [False, True], ids=["permute", "faithful-reshape"])
@pytest.mark.parametrize("audio_per_position", [False, True], ids=["shared-audio", "per-position-audio"])
def test_spatial_attention_matches_the_direct_formula(faithful_reshape, audio_per_position):
    torch.manual_seed(0)
    P, C = 6, 4
    attn = (
        AudioGuidedVisualAttention(
            positions=P,
            channels=C,
            audio_dim=5,
            out_dim=3,
            embed_dim=7,
            score_dim=P,
            faithful_reshape=faithful_reshape,
            audio_per_position=audio_per_position,
        )
        .double()
        .eval()
    )
    for p in attn.parameters():  # large enough that tanh is not linear and the quirks change the result
        nn.init.normal_(p, std=0.7)
    flat, a = torch.randn(2, L, C * P, dtype=torch.float64), torch.randn(2, L, 5, dtype=torch.float64)
    got = attn(flat, a).detach().numpy()
    want = direct_spatial_attention(
        attn, flat, a, faithful_reshape=faithful_reshape, audio_per_position=audio_per_position
    )
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    # Each quirk changes the output: the test would notice if a flag were ignored.
    other = direct_spatial_attention(
        attn, flat, a, faithful_reshape=faithful_reshape, audio_per_position=not audio_per_position
    )
    assert np.abs(got - other).max() > 1e-3


def test_spatial_faithful_variants_carry_both_published_quirks():
    dims = {"visual": 4 * 3, "audio": 5}
    for name in ("jca", "rjca", "dca"):
        default = build_model(name, dims=dims, seq_len=L, visual_positions=4, fusion_width=6)
        faithful = build_model(f"{name}_spatial_faithful", dims=dims, seq_len=L, visual_positions=4, fusion_width=6)
        assert (default.config.spatial_reshape, default.config.spatial_audio) == ("permute", "shared")
        assert (faithful.config.spatial_reshape, faithful.config.spatial_audio) == ("faithful", "per_position")
        assert default.spatial["visual"].guide_axis == 2 and faithful.spatial["visual"].guide_axis == -1
    # The published broadcast exists only when the score width equals the positions (49 there).
    with pytest.raises(ConfigError, match="spatial_score=5 for visual_positions=4"):
        build_model("jca_spatial_faithful", dims=dims, seq_len=L, visual_positions=4, spatial_score=5)
    build_model("jca", dims=dims, seq_len=L, visual_positions=4, spatial_score=5)  # the formula has no such limit
    with pytest.raises(ConfigError, match="spatial_audio"):
        build_model("jca", dims=dims, seq_len=L, visual_positions=4, spatial_audio="broadcast")


def test_jca_with_spatial_visual_maps():
    dims = {"visual": 4 * 5, "audio": 6}
    for reshape in ("permute", "faithful"):
        torch.manual_seed(0)
        model = build_model(
            "jca", dims=dims, seq_len=L, visual_positions=4, spatial_reshape=reshape, fusion_width=6
        ).eval()
        feats = {"visual": torch.randn(B, L, 20), "audio": torch.randn(B, L, 6)}
        assert model(feats).shape == (B, L, 2)
    with pytest.raises(ConfigError, match="multiple"):
        build_model("rjca", dims={"visual": 21, "audio": 6}, visual_positions=4)


def test_masked_batch_norm_matches_batch_norm_on_valid_rows():
    torch.manual_seed(0)
    x, mask = torch.randn(3, 5, 4), torch.rand(3, 5) > 0.3
    norm, ref = MaskedBatchNorm1d(4).train(), nn.BatchNorm1d(4).train()
    out = norm(x, mask)
    torch.testing.assert_close(out[mask], ref(x[mask]))
    assert (out[~mask] == 0).all()
    torch.testing.assert_close(norm.running_mean, ref.running_mean)
    norm.eval(), ref.eval()
    torch.testing.assert_close(norm(x, mask)[mask], ref(x[mask]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ALL_MODELS)
def test_cuda_autocast_fp16(name):
    model = make(name).cuda().train()
    feats = {m: x.cuda() for m, x in inputs().items()}
    masks = {m: x.cuda() for m, x in padding_masks().items()}
    with torch.autocast("cuda", dtype=torch.float16):
        out = model(feats, masks)
        loss = ccc_loss(out, torch.zeros_like(out).uniform_(-1, 1), masks["audio"])
    loss.backward()
    assert torch.isfinite(out).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
