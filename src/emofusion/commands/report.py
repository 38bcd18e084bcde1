"""emofusion report: the results table, plots and ABAW submission files from evaluated fusion runs."""

from __future__ import annotations

import argparse

from emofusion.commands._common import add_config_arguments

NAME = "report"
ORDER = 90
HELP = "table of CCC across experiments/folds/seeds, plots, and validated ABAW submission files"
DESCRIPTION = """\
Read evaluated fusion run directories (results/fusion/<experiment>/fold<k>/seed<s>/: run.json, log.jsonl,
metrics.json, predictions.parquet) and write, under --out:
  results.csv, results.md   CCC per experiment, per fold (mean ± sd over seeds) and pooled (mean ± sd over
                            every (fold, seed) run), raw and smoothed, for each split in report.splits
  plots/                    predictions_<clip>.png (report.plot_clips validation clips of the best experiment),
                            ccc_per_model.png, training_curves.png
  submission/               <experiment>.csv: the ABAW submission (header image_location,valence,arousal, a row
                            <clip>/%05d.jpg for every frame 1..N of every test clip; with
                            report.sample_submission exactly that file's rows) from the experiment's fold-0 run
                            with the lowest seed; check.json: the validator's verdict on each file
  provenance.json           versions, git revision, config hash, every run's provenance
A submission that fails its own check is an error and nothing is written. --out may be new, empty or an earlier
report; one holding anything a report does not write (say plots/figure1.png) is refused before any work."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--manifest", required=True, help="results/manifest.parquet (test clips and frame counts)")
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        metavar="RUN_DIR",
        help="evaluated run directories results/fusion/<experiment>/fold<k>/seed<s>",
    )
    p.add_argument("--out", required=True, help="output folder (e.g. results/report)")


def run(args: argparse.Namespace) -> int:
    from emofusion.config import load_config
    from emofusion.corpus import read_manifest
    from emofusion.repair import require_run_folder
    from emofusion.report.stage import check_report_out, write_report

    check_report_out(args.out)  # before anything is read: a folder of the user's is refused at once
    for run_dir in args.runs:
        require_run_folder(run_dir)
    cfg = load_config(args.config, overrides=args.config_json)
    write_report(
        config=cfg, manifest=read_manifest(args.manifest), manifest_path=args.manifest, run_dirs=args.runs, out=args.out
    )
    return 0
