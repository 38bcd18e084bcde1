"""Atomic outputs and small file helpers.

Every stage writes to a temporary file next to its final path and renames it into place only when the write
finished, so a crash or a kill never leaves a half-written output that a later run would mistake for a result.

A kill (SIGKILL, OOM killer, power cut) gives the writer no chance to delete its temporary file, so the next write
of the same output removes the temporaries that output's earlier writers left (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emofusion.log import logger


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


TMP_MARK = ".tmp-"
_RANDOM = r"[a-z0-9_]{8}"  # the 8 characters tempfile puts between prefix and suffix


def _temporary_name(final: Path) -> re.Pattern[str]:
    """The names :func:`atomic_path` gives the temporaries of ``final`` (file: ``.x.h5.tmp-abcd1234.h5``,
    directory: ``.x.tmp-abcd1234``), and no other name."""
    suffix = re.escape("".join(final.suffixes))
    return re.compile(re.escape(f".{final.name}{TMP_MARK}") + _RANDOM + f"(?:{suffix})?")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that killed earlier writes of ``path`` left beside it; return what was removed.

    Only names :func:`atomic_path` makes for this very output are touched (never other files, never the
    temporaries of other outputs in the folder). That they are stale follows from there being one writer per
    output at a time: Snakemake locks its working directory against a second instance and never schedules two
    jobs for the same output, so when a job starts writing an output, any temporary of that output belongs to a
    run that was killed before it could clean up (a manual ``emofusion`` command writing the output a running job
    is writing is a race the last rename would win anyway).
    """
    final = Path(path)
    pattern = _temporary_name(final)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(final.parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        stale = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
        logger.warning("removed %s: the temporary of an earlier write of %s, killed before it finished", stale, final)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds, delete it otherwise.

    The temporary name keeps the final suffix (``.x.h5.tmp-abc.h5``) so libraries that look at the extension
    (pyarrow, h5py, soundfile) still work. With ``directory=True`` the yielded path is an empty directory.
    Temporaries of ``path`` left by an earlier write that was killed are removed first
    (:func:`remove_stale_temporaries`).
    """
    final = Path(path)
    suffix = "".join(final.suffixes)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(final)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_MARK}", dir=final.parent))
            os.chmod(tmp, 0o777 & ~_umask())
        else:
            fd, name = tempfile.mkstemp(prefix=f".{final.name}{TMP_MARK}", suffix=suffix, dir=final.parent)
            os.close(fd)
            tmp = Path(name)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the mode a plain open() would give
    except OSError as e:  # not writable, read-only file system, a file where a folder should be, disk full
        from emofusion.errors import InputError

        raise InputError(
            f"cannot write {final}: {e.strerror or e} ({e.filename or final.parent}); choose an output "
            "folder you can write to, or fix its permissions"
        ) from None
    try:
        yield tmp
        if directory and final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


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
