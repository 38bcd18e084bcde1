"""Apply a trained fusion model to any video (``emofusion predict``) and package models (``emofusion export``).

- :mod:`.bundle`: the *recipe* of a model (every setting its inputs were made with, read from the run's stores,
  their provenance and ``run.json``; never from today's config), model bundles (export, load, refusals).
- :mod:`.cache`: the per-video stage outputs, cached by the video's content hash and each stage's settings.
- :mod:`.stage`: one video -> per-frame predictions, through the stages' own functions and evaluation's.
- :mod:`.outputs`: the CSV, JSON and plot; :mod:`.overlay`: the annotated video.
"""
