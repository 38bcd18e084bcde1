#!/usr/bin/env python3
"""Compare two results/ trees: are their data byte-identical, provenance aside?

    python scripts/compare_results.py RESULTS_A RESULTS_B

How a refactor is checked to change no behaviour: run the demo before and after (each from a `git archive` copy,
so the git revision recorded in provenance is the same), then compare. Files equal byte for byte are not listed.
Otherwise HDF5 stores are compared dataset by dataset and attribute by attribute, Parquet tables by their data,
JSON / JSON lines with provenance-like keys (versions, git, times, paths, hashes) left out, and model.pt by every
tensor and value outside its provenance. Exit status 0 when the only differences are in those volatile parts.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq

# Whole key names only: a key that merely contains one of these (timeline, weights_sha256) is data, not provenance.
# "sha256" and "path" are the hash and place of a file (a store's hash changes with its provenance attribute);
# a backbone's weights_sha256 is its identity and is compared.
VOLATILE = {
    "provenance",
    "run_provenance",
    "git",
    "created",
    "seconds",
    "time",
    "hostname",
    "duration",
    "elapsed",
    "argv",
    "cwd",
    "path",
    "sha256",
    "versions",
}


def volatile(key: str) -> bool:
    return str(key).lower() in VOLATILE


def file_hashes(obj) -> bool:
    """A ``{file name: sha256}`` map (the report's record of each run's files): hashes of files that carry their
    own provenance (model.pt, log.jsonl), so provenance too. A map of other keys (modality -> weights) is data."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all("." in str(k) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for k, v in obj.items())
    )


def strip(obj):
    """JSON without its volatile keys (and without file-hash maps, see :func:`file_hashes`)."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if not volatile(k) and not file_hashes(v)}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def h5_differences(a: Path, b: Path) -> list[str]:
    """Every dataset or attribute that differs; volatile attributes prefixed with '(volatile) '."""
    out: list[str] = []

    def attrs(x, y, where: str) -> None:
        for k in sorted(set(x.attrs) | set(y.attrs)):
            if not _same(x.attrs.get(k), y.attrs.get(k)):
                out.append(f"{'(volatile) ' if volatile(k) else ''}attribute {where}@{k}")

    def walk(x, y, where: str) -> None:
        attrs(x, y, where or "/")
        for k in sorted(set(x) ^ set(y)):
            out.append(f"only in one: {where}/{k}")
        for k in sorted(set(x) & set(y)):
            u, v = x[k], y[k]
            if isinstance(u, h5py.Group):
                walk(u, v, f"{where}/{k}")
                continue
            if u.dtype != v.dtype or not np.array_equal(u[()], v[()], equal_nan=u.dtype.kind == "f"):
                out.append(f"data {where}/{k}")
            attrs(u, v, f"{where}/{k}")

    with h5py.File(a, "r") as x, h5py.File(b, "r") as y:
        walk(x, y, "")
    return out


def checkpoint_differences(a: Path, b: Path) -> list[str]:
    import torch

    out: list[str] = []

    def walk(u, v, where: str) -> None:
        if isinstance(u, dict) and isinstance(v, dict):
            for k in sorted(set(u) | set(v), key=str):
                if volatile(k):  # provenance, run_provenance: versions, git revision, times
                    continue
                if k not in u or k not in v:
                    out.append(f"only in one: {where}/{k}")
                else:
                    walk(u[k], v[k], f"{where}/{k}")
        elif torch.is_tensor(u) and torch.is_tensor(v):
            if u.dtype != v.dtype or not torch.equal(u, v):
                out.append(f"tensor {where}")
        elif isinstance(u, list | tuple) and isinstance(v, list | tuple) and len(u) == len(v):
            for i, (p, q) in enumerate(zip(u, v, strict=True)):
                walk(p, q, f"{where}/{i}")
        elif u != v:
            out.append(f"value {where}")

    walk(torch.load(a, map_location="cpu", weights_only=True), torch.load(b, map_location="cpu", weights_only=True), "")
    return out


def _parquet_metadata(table) -> dict:
    """A Parquet table's key-value metadata, JSON values parsed and stripped of their volatile keys."""
    out = {}
    for key, value in (table.schema.metadata or {}).items():
        name = key.decode()
        if volatile(name):
            continue
        try:
            out[name] = strip(json.loads(value))
        except ValueError:
            out[name] = value
    return out


def compare(a: Path, b: Path) -> list[str]:
    """One line per file that differs beyond its volatile parts (an empty list: the trees agree)."""
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    problems = [f"only in {'A' if r in files_a else 'B'}: {r}" for r in sorted(files_a ^ files_b)]
    for rel in sorted(files_a & files_b):
        x, y = a / rel, b / rel
        if x.read_bytes() == y.read_bytes():
            continue
        if rel.suffix == ".h5":
            found = [d for d in h5_differences(x, y) if not d.startswith("(volatile)")]
        elif rel.suffix == ".pt":
            found = checkpoint_differences(x, y)
        elif rel.suffix == ".parquet":
            ta, tb = pq.read_table(x), pq.read_table(y)
            found = [] if ta.equals(tb) else ["table data"]
            if _parquet_metadata(ta) != _parquet_metadata(tb):
                found.append("table metadata")
        elif rel.suffix == ".json":
            found = [] if strip(json.loads(x.read_text())) == strip(json.loads(y.read_text())) else ["JSON content"]
        elif rel.suffix == ".jsonl":
            lines = [[strip(json.loads(line)) for line in p.read_text().splitlines()] for p in (x, y)]
            found = [] if lines[0] == lines[1] else ["JSON lines content"]
        else:
            found = ["bytes"]
        problems += [f"{rel}: {d}" for d in found]
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = (Path(p) for p in args)
    for p in (a, b):
        if not p.is_dir():
            print(f"{p} is not a folder; pass two results/ folders", file=sys.stderr)
            return 2
    problems = compare(a, b)
    for line in problems:
        print(line)
    n = len({p for p in a.rglob("*") if p.is_file()})
    print(f"{n} files in A; {len(problems)} difference(s) beyond provenance")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
