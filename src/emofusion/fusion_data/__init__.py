"""The fusion data layer that training, evaluation and predict share: a fold's clips, labels (optional: predict
has none) and features (from stores or memory), checked, normalised, windowed and batched.

- :mod:`.windows`: the two windowings of MODELS.md (clip-level pooled steps, frame-level) and the rate grid.
- :mod:`.clips`: the clips of a fold (split, frame counts, the training rate's grid) and window index arithmetic.
- :mod:`.frame_labels`: the labels of a fold's rows from a labels store, or none; the fold's label check.
- :mod:`.sources`: features from feature stores or memory, and the checks they pass (coverage, NaN/inf).
- :mod:`.normaliser`: per-modality mean and standard deviation.
- :mod:`.batches`: host (in memory or lazy) and device batchers.
- :mod:`.data`: :class:`~.data.FusionData`, the pieces above put together for a model.
- :mod:`.predict`: a model's predictions over windows and frames (validation, evaluation, predict).

Heavy imports (torch, h5py) happen inside these modules' functions, not here.
"""
