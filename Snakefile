# emofusion: raw videos -> faces, audio, transcripts -> feature stores -> fusion models -> CCC tables.
# Table of contents only: configuration, stage files in pipeline order, target rules. Logic lives in src/emofusion.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# `snakemake --report report.html` (after a run): this description, the results table and the plots.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/manifest.smk"
include: "workflow/rules/faces.smk"
include: "workflow/rules/audio.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/fusion.smk"
include: "workflow/rules/predict.smk"
# --- stage includes (pipeline order) ---


# The end of a run: the failed jobs, one line each with its message and log, and the warnings the jobs logged.
onsuccess:
    print_run_summary(log)


onerror:
    print_run_summary(log)


rule all:
    """Everything the configured corpus supports, ending with the report."""
    input:
        layout.MANIFEST,
        layout.LABELS,
        feature_targets(),
        fusion_targets(),
    default_target: True


rule features:
    """The extraction stages (the costly, cached part; send these to a cluster)."""
    input:
        feature_targets(),


rule fusion:
    """The fusion stage: train and evaluate every (experiment, fold, seed), then the report."""
    input:
        fusion_targets(),


rule predict:
    """Apply predict.model to predict.videos: results/predict/<name>/<video>.csv, .json, .png (not part of all)."""
    input:
        lambda wildcards: predict_targets(),  # evaluated only when the target is asked for
