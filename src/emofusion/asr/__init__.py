"""Transcription stage: Whisper word timestamps per video, offline.

* :mod:`emofusion.asr.stage`: what the commands call (``transcribe_file``, ``convert_model``).
* :mod:`emofusion.asr.models` resolves ``asr.model`` without a network; :mod:`emofusion.asr.engines` holds the
  openai-whisper and faster-whisper engines; :mod:`emofusion.asr.transcript` the transcript's layout;
  :mod:`emofusion.asr.convert` the CTranslate2 -> openai-whisper conversion.

Importing this package and :mod:`emofusion.asr.models` is cheap (no torch, no whisper): Snakemake imports them when
it builds the DAG.
"""
