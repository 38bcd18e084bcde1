"""Evaluation stage: frame-level predictions and CCC per split of a trained run (:mod:`.stage`, what
``emofusion evaluate`` calls), smoothing chosen on held-out data (:mod:`.smoothing`)."""
