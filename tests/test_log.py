"""Progress of long work where no terminal shows a bar (Snakemake's job logs, Slurm): a log line every few
seconds with done/total, time left and rate; nothing for work shorter than that."""

from __future__ import annotations

import logging
import time

from emofusion import log


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]


def test_long_work_logs_its_progress_and_short_work_nothing(monkeypatch, caplog):
    monkeypatch.setattr(log, "LOG_EVERY_S", 0.2)
    caplog.set_level(logging.INFO, logger="emofusion")
    for _ in log.progress(range(2), desc="short", unit="batch"):
        pass
    assert _lines(caplog) == []

    for _ in log.progress(range(8), desc="faces clip1", unit="batch"):
        time.sleep(0.1)
    lines = _lines(caplog)
    assert 2 <= len(lines) <= 6, lines  # every ~0.2 s of 0.8 s, not every batch
    assert lines[-1].startswith("progress: faces clip1: 8/8 batch [") and "left" in lines[-1], lines
    assert "batch/s" in lines[-1]
    assert len(set(lines)) == len(lines)  # the closing line is not a repeat of the last one


def test_a_disabled_report_logs_nothing(monkeypatch, caplog):
    monkeypatch.setattr(log, "LOG_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="emofusion")
    for _ in log.progress(range(3), desc="x", disable=True):
        time.sleep(0.01)
    assert _lines(caplog) == []


def test_transcription_reports_seconds_of_audio_as_segments_are_decoded(monkeypatch, caplog):
    from types import SimpleNamespace

    from emofusion.asr.engines import _reported

    monkeypatch.setattr(log, "LOG_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="emofusion")
    segments = [SimpleNamespace(end=4.0), SimpleNamespace(end=9.5), SimpleNamespace(end=12.3)]
    assert list(_reported(iter(segments), 12.0)) == segments  # passed through, lazily
    lines = _lines(caplog)
    assert any(line.startswith("progress: transcribe: 4.0/12.0 s") for line in lines), lines
    assert lines[-1].startswith("progress: transcribe: 12.0/12.0 s"), lines  # a last word past the end is capped
