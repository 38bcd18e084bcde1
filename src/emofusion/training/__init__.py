"""The fusion stage's training half: experiments from config, windowed datasets over the feature stores, the
training loop with resume.

- :mod:`emofusion.training.experiments`: resolve a ``fusion.experiments`` entry (preset + overrides, stores, run
  folders), the JSON a Snakemake rule passes.
- :mod:`emofusion.training.windows`: the two windowings of MODELS.md (clip-level pooled steps, frame-level).
- :mod:`emofusion.training.data`: stores + labels + manifest of one fold, checked, normalised, batched.
- :mod:`emofusion.training.predict`: predictions over windows and frames (used by validation and evaluation).
- :mod:`emofusion.training.stage`: ``train_run``, what ``emofusion train`` calls (optimiser, schedule, AMP, early
  stopping, resumable checkpoints).

Heavy imports (torch, h5py) happen inside these modules, not here.
"""
