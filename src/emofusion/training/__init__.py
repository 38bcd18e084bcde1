"""The fusion stage's training half: experiments from config, windowed datasets over the feature stores, the
training loop with resume.

- :mod:`emofusion.training.experiments`: resolve a ``fusion.experiments`` entry (preset + overrides, stores, run
  folders), the JSON a Snakemake rule passes.
- :mod:`emofusion.training.model`: seeds, the experiment's network for the stores' widths, torch.compile's compiler.
- :mod:`emofusion.training.loop`: the optimisation objects, one epoch of optimisation, validation.
- :mod:`emofusion.training.resume`: the resume state (resume.pt) that saves and loads itself.
- :mod:`emofusion.training.stage`: ``train_run``, what ``emofusion train`` calls, in named steps (fold data, model,
  optimisation, resume state, epochs, the run's artefacts).

The fold data (windowing, stores, labels, normaliser, batches) is :mod:`emofusion.fusion_data`, shared with
evaluation and predict.

Heavy imports (torch, h5py) happen inside these modules, not here.
"""
