"""emofusion export: a trained run as a portable model bundle."""

from __future__ import annotations

import argparse

NAME = "export"
ORDER = 96
HELP = "package a trained run as a model bundle (model.pt + every setting its inputs need) for `predict --model`"
DESCRIPTION = """\
Write --out (NAME.tar, or a folder for any other name), atomically; it must be new, an empty folder or an earlier
bundle (anything else, such as a folder with files of yours, is refused before the run is read), holding:
  model.pt     the run's best checkpoint (weights, model config, the feature normaliser), a plain dict read with
               torch.load(weights_only=True)
  bundle.json  bundle_schema, the recipe (resolved experiment and windowing, smoothing windows from metrics.json,
               face / audio / ASR settings, every backbone's name, options, weights sha256 and source), the
               licences of every set of weights, package versions, the checkpoint's sha256
The settings are read from the run's stores and the provenance of the stage outputs they were made from (they
must still exist when exporting); the bundle needs none of them. `emofusion predict --model NAME.tar` checks the
installed backbones' weights against the recorded sha256 and refuses a bundle of a newer schema. Nothing in a
bundle is executed when it is loaded. Mind the licences: a model trained on Aff-Wild2 is bound by its licence
(research use only, no redistribution of the data; ask the database owners before sharing a model)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="trained and evaluated run folder")
    p.add_argument("--out", required=True, help="NAME.tar (a tar file) or a folder")


def run(args: argparse.Namespace) -> int:
    from emofusion.log import logger
    from emofusion.predict.stage import export_bundle
    from emofusion.repair import require_run_folder

    require_run_folder(args.run)
    doc = export_bundle(args.run, args.out)
    logger.info(
        "exported %s (%s) to %s; weights licences: %s",
        args.run,
        doc["name"],
        args.out,
        "; ".join(f"{k}: {v}" for k, v in doc["licences"].items()),
    )
    return 0
