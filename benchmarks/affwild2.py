"""What the measured throughputs mean for Aff-Wild2: hours per stage on one device and on N (Slurm) devices.

    python benchmarks/affwild2.py benchmarks/out/*.json                      # every figure file of a run
    python benchmarks/affwild2.py --gpus 8 faces.json embed.json asr.json train.json

Reads the JSON the benchmarks write with ``--json`` (``faces.py``, ``embed.py``, ``asr.py``, ``train.py``; see
``benchmarks/figures.py``) and prints one row per stage: its measured throughput, the hours it means for the whole
corpus on one device, and on ``--gpus`` devices, with the file and machine each figure comes from. Nothing is
measured here and nothing is assumed beyond what a row says:

* Corpus (../shared/PROTOCOL.md): about 594 videos, about 2.99 M frames, mostly 30 fps, so about 27.7 h of audio.
* faces: frames over seconds of ``faces.py`` table 1 (one process per video, model loading excluded); one face job
  per device (more jobs per GPU are a measurement of their own). The start-up of a job (``faces.py`` table 5) is a
  row of its own, once per clip (``clips_per_face_job: 1``) and once per shard (``--clips-per-face-job``, 32).
* visual/audio/text backbones: the stage's frames/s from ``embed.py`` (every frame of a clip, faceless ones included).
* audio extraction and ASR: the real-time factor of ``asr.py`` over 27.7 h of audio.
* training: seconds per epoch from ``train.py``, scaled by 2.99 M / the benchmark corpus's frames (the same train
  share of clips); an epoch runs on one device, so N devices run N runs (experiments x folds x seeds) at once,
  not one run N times faster. The row is per epoch; a run is up to ``epochs`` of them.
The sharded stages (faces per video, embedding per clip shard, audio and ASR per video) divide by N.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FRAMES = 2_990_000  # Aff-Wild2 (../shared/PROTOCOL.md): about 2.99 M frames in about 594 videos
VIDEOS = 594
FPS = 30.0
AUDIO_HOURS = FRAMES / FPS / 3600  # about 27.7 h


def load(paths: list[Path]) -> list[dict]:
    """The figure files, each with its path; a file that is not one names itself."""
    docs = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(
                f"{path}: not a readable JSON figure file ({e}); rerun the benchmark with --json"
            ) from None
        if not isinstance(doc, dict) or "benchmark" not in doc or "figures" not in doc:
            raise SystemExit(f"{path}: no 'benchmark'/'figures' keys; write it with a benchmark's --json option")
        doc["path"] = str(path)
        docs.append(doc)
    return docs


def source(doc: dict) -> str:
    m = doc.get("machine", {})
    where = m.get("gpu") or f"{m.get('device', '?')}, {m.get('cpus', '?')} CPUs"
    return f"{Path(doc['path']).name} ({where}, {m.get('commit', '?')}, {m.get('date', '?')})"


def rows_for(doc: dict, gpus: int, clips_per_job: int = 32) -> list[dict]:
    """Projection rows of one figure file."""
    f, kind, src = doc["figures"], doc["benchmark"], source(doc)
    out = []

    def add(stage, rate, unit, hours, sharded=True, note=""):
        out.append(
            {
                "stage": stage,
                "rate": rate,
                "unit": unit,
                "hours": hours,
                "hours_n": hours / gpus if sharded else hours,
                "sharded": sharded,
                "note": note,
                "source": src,
            }
        )

    if kind == "faces":
        rows = f.get("end_to_end", [])
        if rows:
            frames, seconds = sum(r["frames"] for r in rows), sum(r["seconds"] for r in rows)
            fps = frames / seconds
            batch = f.get("settings", {}).get("batch_size")
            add(
                f"faces (one job, batch {batch})",
                fps,
                "frames/s",
                FRAMES / fps / 3600,
                note=f"{len(rows)} videos, {frames} frames; start-up excluded",
            )
        for r in f.get("shards", []):
            for per_job in (1, clips_per_job):
                jobs = -(-VIDEOS // per_job)
                add(
                    f"faces start-up, {per_job} clip{'s' if per_job > 1 else ''} per job",
                    r["startup_s"],
                    "s per job",
                    jobs * r["startup_s"] / 3600,
                    note=f"{jobs} jobs; measured on {r['clips']} clips ({r['per_clip_s']:.1f} s as a process each, "
                    f"{r['shard_s']:.1f} s as one shard)",
                )
    elif kind == "embed":
        for r in f.get("embed", []):
            precision = "fp16" if r.get("amp") else "fp32"
            note = f"forward alone {r['forward_fps']:.0f} frames/s" if "forward_fps" in r else ""
            add(f"embed {r['backbone']} ({precision})", r["fps"], "frames/s", FRAMES / r["fps"] / 3600, note=note)
    elif kind == "asr":
        if "audio" in f:
            add("audio extraction", f["audio"]["rtf"], "x real time", AUDIO_HOURS / f["audio"]["rtf"])
        for r in f.get("asr", []):
            add(
                f"ASR {r['engine']} ({r['compute']}, beam {r['beam']})", r["rtf"], "x real time", AUDIO_HOURS / r["rtf"]
            )
    elif kind == "train":
        scale = FRAMES / f["frames"]
        for r in f.get("rows", []):
            per_epoch = r["epoch_s"] * scale
            util = f", GPU {r['gpu_util']:.0f} %" if r.get("gpu_util") is not None else ""
            add(
                f"train {r['model']} per epoch ({r['data']}, {r['amp']}{', compiled' if r.get('compile') else ''})",
                FRAMES / per_epoch,
                "frames/s",
                per_epoch / 3600,
                sharded=False,
                note=f"{per_epoch:.0f} s/epoch; model alone {r['model_s'] * scale:.0f} s{util}",
            )
    return out


def table(rows: list[dict], gpus: int) -> str:
    lines = [
        f"| stage | measured | hours on 1 device | hours on {gpus} devices | note | source |",
        "|---|--:|--:|--:|---|---|",
    ]
    for r in rows:
        n = f"{r['hours_n']:.2f}" if r["sharded"] else f"{r['hours_n']:.2f} (per run; {gpus} runs at once)"
        lines.append(
            f"| {r['stage']} | {r['rate']:.1f} {r['unit']} | {r['hours']:.2f} | {n} | {r['note']} | {r['source']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, help="figure files written by the benchmarks' --json")
    p.add_argument("--gpus", type=int, default=8, help="devices (Slurm jobs) for the last column (default 8)")
    p.add_argument("--clips-per-face-job", type=int, default=32, help="the shard size of the face start-up row")
    args = p.parse_args(argv)
    if args.gpus < 1 or args.clips_per_face_job < 1:
        p.error("--gpus and --clips-per-face-job must be at least 1")
    docs = load(args.files)
    rows = [r for d in docs for r in rows_for(d, args.gpus, args.clips_per_face_job)]
    if not rows:
        print("no stage figures in these files", file=sys.stderr)
        return 1
    print(
        f"Aff-Wild2: {VIDEOS} videos, {FRAMES / 1e6:.2f} M frames, {AUDIO_HOURS:.1f} h of audio "
        f"(../shared/PROTOCOL.md)\n"
    )
    print(table(rows, args.gpus))
    return 0


if __name__ == "__main__":
    sys.exit(main())
