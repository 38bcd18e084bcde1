"""emofusion status: compare results/ with what the config asks for and with the report; print the repairs."""

from __future__ import annotations

import argparse

from emofusion.commands._common import add_config_arguments

NAME = "status"
ORDER = 90
HELP = "list missing, incomplete or edited outputs and stale report entries, each with the command that repairs it"
DESCRIPTION = """\
Run in the project folder (where `snakemake` runs). Checks, for the config (default: ./config.yaml):
  - what a killed Snakemake leaves: the folder's lock, and outputs it marked incomplete (then every repair carries
    --rerun-incomplete: Snakemake refuses to run without it);
  - the manifest, the labels and every feature store the config builds or an experiment reads: missing, damaged
    (each is opened: its header, as a job would find it), or changed after the Snakemake job that wrote it ended
    (edited in place: Snakemake then sees it as up to date); the face store of every clip of the manifest: damaged;
  - every run folder of the grid (fusion.experiments x folds x seeds): missing or incomplete;
  - the report: runs it describes whose files are gone or changed since (provenance.json records each run file's
    sha256), runs it lacks, runs the config no longer asks for;
  - what a plain `snakemake` would run (a dry run; --no-dry-run skips it).
Each problem comes with a Snakemake command that repairs it, to run as printed from the project folder.
Exits 0 when nothing is wrong, 1 otherwise."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--directory", default=".", help="the project folder (default: the current one)")
    p.add_argument("--no-dry-run", action="store_true", help="skip the Snakemake dry run")
    p.add_argument(
        "snakemake_args",
        nargs=argparse.REMAINDER,
        metavar="-- SNAKEMAKE_ARGS",
        help="extra arguments for the dry run after `--` (e.g. -- --config corpus='{root: data}')",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from emofusion.config import load_config
    from emofusion.status import TARGET_RULES, describe, dry_run, status

    root = Path(args.directory)
    if not root.is_dir():
        from emofusion.errors import InputError

        raise InputError(f"--directory {root} is not a folder; pass the project folder (where `snakemake` runs)")
    config = args.config
    if config is None and args.config_json is None and (root / "config.yaml").is_file():
        config = str(root / "config.yaml")  # what `snakemake` in this folder reads
    cfg = load_config(config, overrides=args.config_json)
    findings = status(cfg, root)
    jobs, output = None, None
    if not args.no_dry_run:
        extra = [a for a in args.snakemake_args if a != "--"]
        jobs, output = dry_run(root, extra)
    print(describe(findings, jobs, output))
    planned = {r: n for r, n in (jobs or {}).items() if r not in TARGET_RULES}
    dry_run_failed = not args.no_dry_run and jobs is None
    return 1 if findings or planned or dry_run_failed else 0
