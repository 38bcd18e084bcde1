"""Text backbones: all-MiniLM-L6-v2 words in context and in overlapping chunks, the RJCMA recipe on a tiny BERT,
and a transcript's rows on the frames of its words."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from emofusion.errors import ConfigError
from emofusion.features import timeline
from emofusion.features.backbones import build_backbone
from feature_inputs import words_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
