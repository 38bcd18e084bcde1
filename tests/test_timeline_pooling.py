"""The rows audio and text backbones put on the frame timeline: the window pool and its definition, the latest
finished window, words on the frames they are spoken at."""

from __future__ import annotations

import numpy as np
import pytest

from emofusion.errors import InputError
from emofusion.features import timeline
from feature_inputs import words_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
