"""The `emofusion` command: one subcommand per pipeline step (Snakemake calls exactly these).

Subcommands are the modules of :mod:`emofusion.commands`, discovered at start-up (``_``-prefixed modules
such as :mod:`emofusion.commands._common`, the shared argument helpers, are not subcommands). Each module defines
``NAME``, ``ORDER`` (pipeline position, for --help), ``HELP`` (one line), ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args) -> int``. Command modules import only argparse-level code at the top, so `--help` is instant;
heavy imports (torch, whisper) happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

import emofusion
from emofusion import commands
from emofusion.errors import EmofusionError
from emofusion.log import logger, setup_logging


def _command_modules() -> list[ModuleType]:
    mods = [
        importlib.import_module(f"{commands.__name__}.{m.name}")
        for m in pkgutil.iter_modules(commands.__path__)
        if not m.name.startswith("_")
    ]
    return sorted(mods, key=lambda m: (m.ORDER, m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emofusion",
        description="Audio-visual(-text) dimensional emotion recognition, from raw videos to CCC tables. "
        "Each subcommand is one pipeline step; Snakemake (see the Snakefile) calls them in order and "
        "caches their outputs. Every subcommand writes its outputs atomically and exits non-zero on "
        "failure.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"emofusion {emofusion.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _command_modules():
        p = sub.add_parser(
            mod.NAME, help=mod.HELP, description=mod.DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        # SUPPRESS: without -v here, `emofusion -v COMMAND` keeps the -v given before the subcommand
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def os_error_line(e: OSError) -> str:
    """One line for an OSError: what failed, on which file, and what to do."""
    files = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or str(e) or type(e).__name__
    if not files:  # h5py and others name no file
        return (
            f"{what}; one of the files given could not be read or written: check each path is the file or folder "
            "its option asks for (rerun with -v to see where)"
        )
    return (
        f"{files}: {what}; check that the path is the file or folder the option asks for and that you can read "
        "(or write) it (-v shows where it happened)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except EmofusionError as e:
        logger.error("%s", e)
        return 1
    except OSError as e:
        # A file the command could not read or write that no check named first (a folder where a file goes, a
        # read-only disk): one line naming it, the traceback only with -v.
        logger.debug("traceback", exc_info=True)
        logger.error("%s", os_error_line(e))
        return 1
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
