"""emofusion check-submission: validate an ABAW valence-arousal submission file against the test clips."""

from __future__ import annotations

import argparse

from emofusion.commands._common import add_config_arguments

NAME = "check-submission"
ORDER = 91
HELP = "validate an ABAW submission CSV (the check `emofusion report` runs on its own files)"
DESCRIPTION = """\
Check a submission file as the ABAW valence-arousal challenge expects it: header exactly
image_location,valence,arousal; rows <clip>/%05d.jpg,v,a; every row's clip a test clip of the manifest;
per clip frames 1..N ascending without gaps or duplicates (N = the manifest's frame count, or the number of
rows the sample file lists with --sample / report.sample_submission, whose rows and order must then be matched
exactly); values finite and in [-1, 1]; every test clip present. Every problem is listed. Exits 1 when the file
is invalid. Use it on a file edited or made outside emofusion before uploading it."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--manifest", required=True, help="results/manifest.parquet (test clips and frame counts)")
    p.add_argument("submission", help="the submission CSV to check")
    p.add_argument("--sample", help="the organisers' sample prediction file (default: report.sample_submission)")
    p.add_argument("--out", help="also write the verdict as JSON to this path")


def run(args: argparse.Namespace) -> int:
    from emofusion.config import load_config
    from emofusion.corpus import read_manifest
    from emofusion.io import write_json
    from emofusion.log import logger
    from emofusion.report.stage import check_submission, read_sample

    cfg = load_config(args.config, overrides=args.config_json)
    manifest = read_manifest(args.manifest)
    test = manifest[manifest["split"] == "test"]
    frames = {str(c): int(n) for c, n in zip(test["clip"], test["frames"], strict=True)}
    sample_path = args.sample or cfg["report"]["sample_submission"]
    verdict = check_submission(args.submission, frames, sample=read_sample(sample_path) if sample_path else None)
    if args.out:
        write_json(args.out, verdict)
    if verdict["ok"]:
        logger.info("%s is a valid submission: %d rows, %d clips", args.submission, verdict["rows"], verdict["clips"])
        return 0
    logger.error("%s is not a valid submission:\n  %s", args.submission, "\n  ".join(verdict["errors"]))
    return 1
