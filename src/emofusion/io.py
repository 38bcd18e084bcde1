"""Atomic outputs and small file helpers.

Every stage writes to a temporary file next to its final path and renames it into place only when the write
finished, so a crash or a kill never leaves a half-written output that a later run would mistake for a result.

A kill (SIGKILL, OOM killer, power cut) gives the writer no chance to delete its temporary file, so the next write
of the same output removes the temporaries that output's earlier writers left (:func:`remove_stale_temporaries`).
A temporary's name carries its writer's host and process id, so a temporary whose writer is still running (two
``emofusion predict`` sharing one cache) is never taken for a killed one.

Nothing the tool did not write is replaced: a folder output is replaced only when every entry in it is one the
tool writes for that output (:func:`check_replaceable`); the names themselves are the mark of ownership, so a
user's file put into an earlier output folder (``plots/figure1.png``) stops the command instead of being deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from emofusion.errors import InputError
from emofusion.log import logger


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


TMP_MARK = ".tmp-"
_RANDOM = r"[a-z0-9_]{8}"  # the 8 characters tempfile puts between prefix and suffix
# A temporary of another host cannot be asked whether its writer lives: it is stale once untouched this long.
FOREIGN_STALE_S = 24 * 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _temporary_name(final: Path) -> re.Pattern[str]:
    """The names :func:`atomic_path` gives the temporaries of ``final`` (file: ``.x.h5.tmp-node1-4242-abcd1234.h5``,
    directory: ``.x.tmp-node1-4242-abcd1234``; without host and pid when an older emofusion wrote it), and no other
    name."""
    suffix = re.escape("".join(final.suffixes))
    writer = r"(?:(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-)?"
    return re.compile(re.escape(f".{final.name}{TMP_MARK}") + writer + _RANDOM + f"(?:{suffix})?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _writer_is_gone(match: re.Match[str], path: Path) -> bool:
    """Whether the temporary ``path`` belongs to a writer that no longer runs: on this host its process is gone;
    on another host (a shared cluster file system) it has not been touched for :data:`FOREIGN_STALE_S`; a name
    without host and pid (an older version's) is stale as it always was."""
    if match["host"] is None:
        return True
    if match["host"] == _host():
        return not _alive(int(match["pid"]))
    try:
        return time.time() - path.lstat().st_mtime > FOREIGN_STALE_S
    except FileNotFoundError:
        return False


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that killed earlier writes of ``path`` left beside it; return what was removed.

    Only names :func:`atomic_path` makes for this very output are touched (never other files, never the
    temporaries of other outputs in the folder), and only those whose writer is gone (:func:`_writer_is_gone`):
    a second process writing the same output at the same time (two predicts on one cache) keeps its temporary,
    and the last rename wins with a complete file either way.
    """
    final = Path(path)
    pattern = _temporary_name(final)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(final.parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        stale = Path(entry.path)
        if match is None or not _writer_is_gone(match, stale):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
        logger.warning("removed %s: the temporary of an earlier write of %s, killed before it finished", stale, final)
    return removed


def is_temporary_of(name: str, final: str) -> bool:
    """Whether ``name`` (a folder entry) is a temporary :func:`atomic_path` makes for an output named ``final``."""
    return _temporary_name(Path(final)).fullmatch(name) is not None


def check_replaceable(
    path: str | os.PathLike,
    *,
    what: str,
    owned: Callable[[str], bool],
    option: str = "--out",
    label: str | None = None,
) -> None:
    """Refuse (InputError) to write the folder output ``path`` over anything the tool did not write.

    It may be missing or an empty folder; otherwise every entry in it must be one the tool writes there
    (``owned(name)``, e.g. the files of an earlier run of the same command) or such an entry's temporary. A file
    where the folder should be, the current folder or one holding it, or any other entry (a user's file) stop the
    command before it does any work, the folder left untouched. ``what`` names the output kind in the message,
    ``label`` the folder (default: ``option path``), ``option`` the option to change (empty: none)."""
    final = Path(path)
    label = label or (f"{option} {path}" if option else str(path))
    hint = f"choose another {option} (a new folder)" if option else "write it elsewhere"
    if final.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise InputError(
            f"{label} is the current folder or holds it, and the {what} needs a folder of its own: name a new "
            f"one, e.g. {option or 'the output'} {Path(path) / 'out'}"
        )
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise InputError(f"{label} is a file, not a folder; it is left alone: {hint}")
    if not final.exists():
        return
    try:
        foreign = sorted(e.name for e in os.scandir(final) if not _own_entry(e.name, owned))
    except OSError as e:
        raise InputError(f"{label} cannot be read ({e.strerror or e}); it is left alone: {hint}") from None
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(
            f"{label} holds files emofusion did not write there ({shown}), so it is not an earlier {what} and "
            f"nothing in it is replaced: {hint}, or move your files out of it"
        )


# The empty flag file Snakemake puts into a directory() output after the job that wrote it (its mtime carrier).
SNAKEMAKE_FLAGS = frozenset({".snakemake_timestamp"})


def _own_entry(name: str, owned: Callable[[str], bool]) -> bool:
    """An entry the tool writes, Snakemake's flag file in a folder output of a rule, or the temporary of an entry
    the tool writes (``.x.csv.tmp-...`` of ``x.csv``, left by a kill)."""
    if owned(name) or name in SNAKEMAKE_FLAGS:
        return True
    base = name[1:].split(TMP_MARK, 1)[0] if name.startswith(".") and TMP_MARK in name else ""
    return bool(base) and owned(base) and is_temporary_of(name, base)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike,
    *,
    directory: bool = False,
    owned: Callable[[str], bool] | None = None,
    what: str = "output",
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds, delete it otherwise.

    The temporary name keeps the final suffix (``.x.h5.tmp-node1-4242-abc.h5``) so libraries that look at the
    extension (pyarrow, h5py, soundfile) still work. With ``directory=True`` the yielded path is an empty
    directory, and an existing folder at ``path`` is replaced only when :func:`check_replaceable` finds nothing
    in it but the entries ``owned`` accepts (``what`` names the output in the refusal), checked before the block
    and again before the rename, so a file put there meanwhile is not lost either. Temporaries of ``path`` left by
    an earlier write that was killed are removed first (:func:`remove_stale_temporaries`).
    """
    final = Path(path)
    suffix = "".join(final.suffixes)
    prefix = f".{final.name}{TMP_MARK}{_host()}-{os.getpid()}-"

    def check() -> None:
        if directory:
            check_replaceable(final, what=what, owned=owned or (lambda name: False), option="")
        elif final.is_dir():  # os.replace would fail at the end, after all the work
            raise InputError(f"{final} is a folder, not a file; it is left alone: give a file path for the {what}")

    check()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(final)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
            os.chmod(tmp, 0o777 & ~_umask())
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=final.parent)
            os.close(fd)
            tmp = Path(name)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the mode a plain open() would give
    except OSError as e:  # not writable, read-only file system, a file where a folder should be, disk full
        raise InputError(
            f"cannot write {final}: {e.strerror or e} ({e.filename or final.parent}); choose an output "
            "folder you can write to, or fix its permissions"
        ) from None
    try:
        yield tmp
        if directory and final.exists():
            check()
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def check_writable_folder(folder: str | os.PathLike, option: str) -> None:
    """Refuse ``folder`` before any work when it cannot be made or written (a read-only disk, a file on its path):
    predict writes its results only after computing everything. Tried by writing a file, not by permission bits,
    which say nothing for root or a read-only mount; creates nothing that stays."""
    target = Path(folder)
    existing = next(p for p in (target, *target.absolute().parents) if p.exists())
    if existing == target and not target.is_dir():
        raise InputError(f"{option} {folder} is a file, not a folder; it is left alone: choose another {option}")
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(existing))
        fd, name = tempfile.mkstemp(prefix=".emofusion-write-check-", dir=existing)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise InputError(
            f"cannot write {option} {folder}: {e.strerror or e} ({e.filename or existing}); choose a folder you can "
            "write to"
        ) from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically, sorted keys, so reruns give byte-identical files."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: str | os.PathLike, df, *, metadata: dict[str, Any] | None = None) -> None:
    """Write a DataFrame to Parquet atomically; ``metadata`` goes into the file's key-value metadata as JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        existing = dict(table.schema.metadata or {})
        existing[b"emofusion"] = json.dumps(metadata, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata(existing)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``emofusion`` metadata written by :func:`write_parquet` (empty dict if none)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"emofusion")
    return json.loads(raw) if raw else {}
