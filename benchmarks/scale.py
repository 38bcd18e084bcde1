"""The pipeline at Aff-Wild2's scale: jobs planned, dry-run and `status` time, and what each job pays to start.

    .venv/bin/python benchmarks/scale.py                     # 594 clips, as Aff-Wild2 (a few minutes)
    .venv/bin/python benchmarks/scale.py --quick             # 24 clips, one timing each (the smoke test)
    .venv/bin/python benchmarks/scale.py --compute faces.json embed.json asr.json --gpus 8 --json scale.json

1. Corpus: ``--clips`` tiny clips (one second of 64x48 video with a sine tone, one file copied for every video) in
   the Aff-Wild2 layout ``corpus.discover`` reads (../shared/PROTOCOL.md): ``videos/batch1/``, annotation files in
   ``annotations/VA_Estimation_Challenge/Train_Set`` and ``Validation_Set`` and a test list; split 356 / 76 / 162
   (scaled for another ``--clips``), a few two-person videos (``<video>_left`` / ``_right``, one video, one audio).
2. Planning: ``snakemake -n --quiet rules`` of the repository's workflow on that corpus (jobs per rule, wall time)
   and ``emofusion status`` (which reads the results and runs the same dry run), each ``--repeat`` times, fastest.
3. Fixed cost per job: each per-clip (or per-video) stage's ``emofusion`` command as the rules call it, one job at a
   time on one tiny clip, wall seconds (fastest of ``--repeat``); beside them ``python -c pass`` and
   ``import torch``. A one-second clip computes for next to nothing, so the wall time is what any clip pays to
   start: interpreter, imports, config, model loading.
4. Projection onto Aff-Wild2 (594 clips): jobs per stage (the dry run's count: a job per clip scaled by 594 /
   ``--clips``, shards as planned) times the fixed cost, in hours of job time; on ``--gpus`` devices (Slurm
   jobs) divided by N, beside the compute hours of the same stage that ``benchmarks/affwild2.py`` projects from
   the ``--compute`` figure files (no file: overhead only). GPU jobs also initialise CUDA (seconds more per job);
   this runs where it is run.

``--json PATH`` writes the figures (``benchmarks/figures.py``). Nothing here fails on a slow machine: the goals
(fixed cost at most 5 % of compute, dry run and status under 10 s for 594 clips on 2 cores) are printed beside
the figures, not asserted.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import affwild2  # benchmarks/ is not a package: found through sys.path
from figures import write_figures

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"train": 356, "validation": 76, "test": 162}  # Aff-Wild2 VA: 594 clips
TWO_PERSON = 14  # videos with a _left and a _right clip (594 clips in 580 videos)
# The stages that run once per clip or per video, in pipeline order: the rule and the `emofusion` command.
STAGES = ("faces", "audio", "transcribe", "embed_visual", "embed_audio", "embed_text")
# Which compute row of benchmarks/affwild2.py belongs to a stage (the start of its name; first match).
COMPUTE_ROWS = {
    "faces": "faces (one job",
    "audio": "audio extraction",
    "transcribe": "ASR ",
    "embed_visual": "embed visual:fer",
    "embed_audio": "embed audio:egemaps",
    "embed_text": "embed text:minilm",
}
GOAL_SHARE = 0.05
GOAL_PLAN_S = 10.0


def split_sizes(n: int) -> dict[str, int]:
    """Aff-Wild2's 356 / 76 / 162 split scaled to ``n`` clips (at least one per split)."""
    total = sum(SPLITS.values())
    sizes = {s: max(1, round(c * n / total)) for s, c in SPLITS.items()}
    sizes["train"] = n - sizes["validation"] - sizes["test"]
    if sizes["train"] < 1:
        raise SystemExit(f"--clips {n}: need at least 3 clips (one per split)")
    return sizes


def make_clip(path: Path, frames: int = 30, fps: int = 30) -> None:
    """One second of 64x48 test pattern with a sine tone (H.264 + AAC)."""
    dur = frames / fps
    video = ["-f", "lavfi", "-i", f"testsrc=size=64x48:rate={fps}:duration={dur}"]
    audio = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={dur}"]
    codecs = ["-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"]
    quiet = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run(["ffmpeg", *quiet, *video, *audio, *codecs, str(path)], check=True, capture_output=True)


def build_corpus(root: Path, n: int, frames: int = 30) -> dict[str, int]:
    """An Aff-Wild2-shaped corpus of ``n`` clips under ``root``; returns the clips per split and the videos.

    Clips are named ``clipNNNN``; the first videos of the train split hold two clips (``clipNNNN_left`` /
    ``_right``): 14 at 594 clips, as many per clip for another ``n``. Every video is a copy of one tiny clip."""
    sizes = split_sizes(n)
    two_person = min(max(1, round(TWO_PERSON * n / sum(SPLITS.values()))), sizes["train"] // 2)
    (root / "videos" / "batch1").mkdir(parents=True)
    template = root / "template.mp4"
    make_clip(template, frames=frames)
    ann = root / "annotations" / "VA_Estimation_Challenge"
    rows = "valence,arousal\n" + "".join(f"{0.5 * math.sin(i / 5):.3f},{0.1:.3f}\n" for i in range(frames))
    test_names: list[str] = []
    videos = 0
    k = 0
    for split, count in sizes.items():
        folder = ann / {"train": "Train_Set", "validation": "Validation_Set", "test": "Test_Set"}[split]
        folder.mkdir(parents=True, exist_ok=True)
        made = 0
        while made < count:
            video = f"clip{k:04d}"
            k += 1
            shutil.copyfile(template, root / "videos" / "batch1" / f"{video}.mp4")
            videos += 1
            pair = split == "train" and k <= two_person and count - made >= 2
            clips = [f"{video}_left", f"{video}_right"] if pair else [video]
            for clip in clips:
                if split == "test":
                    test_names.append(clip)
                else:
                    (folder / f"{clip}.txt").write_text(rows)
            made += len(clips)
    (root / "test_list.txt").write_text("".join(f"{c}\n" for c in test_names))
    template.unlink()
    return {**sizes, "videos": videos}


def workdir_for(work: Path, corpus: Path) -> Path:
    """A project folder: the repository's config with the corpus set to ``corpus``."""
    import yaml

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["corpus"].update(root=str(corpus), test_list=str(corpus / "test_list.txt"), use_cropped_aligned=False)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return work


def env() -> dict[str, str]:
    """This environment with the interpreter's bin first (the rules' and status's `emofusion`, `snakemake`)."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONWARNINGS": "ignore",
        "HF_HUB_OFFLINE": "1",
    }


def timed(cmd: list[str], cwd: Path, repeat: int = 1, timeout: int = 600) -> tuple[float, str]:
    """Fastest wall seconds of ``cmd`` over ``repeat`` runs, and the output of the last; SystemExit naming the
    command when it fails (a benchmark of a failing command means nothing)."""
    best = math.inf
    out = ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env())
        best = min(best, time.perf_counter() - t0)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0 and not (proc.returncode == 1 and cmd[:2] == ["emofusion", "status"]):  # 1: findings
            raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{out[-3000:]}")
    return best, out


def planned_jobs(text: str) -> dict[str, int]:
    """Rule -> job count from the table `snakemake -n --quiet rules` prints (its total line left out)."""
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            counts[parts[0]] = int(parts[1])
    return counts


SHARD_RULE = re.compile(r"^(?P<stage>.+)_shard\d+$")  # faces_shard3, embed_visual_shard12: one rule per shard


def stage_jobs(jobs: dict[str, int]) -> dict[str, tuple[int, bool]]:
    """Rule -> jobs folded into stage -> (jobs, sharded): a stage run as shards has one rule per shard."""
    out: dict[str, tuple[int, bool]] = {}
    for rule, n in jobs.items():
        m = SHARD_RULE.match(rule)
        stage = m["stage"] if m else rule
        total, sharded = out.get(stage, (0, False))
        out[stage] = (total + n, sharded or m is not None)
    return out


def plan(work: Path, repeat: int) -> dict:
    """Jobs per rule from a dry run, its wall time, and `emofusion status`'s (which runs the same dry run)."""
    snakefile = ["--snakefile", str(REPO / "Snakefile")]
    dry_s, out = timed(["snakemake", "-n", "--quiet", "rules", "--cores", "2", *snakefile], work, repeat)
    jobs = planned_jobs(out)
    if not jobs:
        raise SystemExit(f"the dry run planned no jobs:\n{out[-3000:]}")
    status_s, _ = timed(["emofusion", "status", "--directory", str(work), "--", *snakefile], work, repeat)
    return {"jobs": jobs, "dry_run_s": dry_s, "status_s": status_s}


def stage_commands(work: Path, video: Path, clip: str) -> list[tuple[str, list[str]]]:
    """(stage, command) for one clip, as the rules call them (threads as the rules give them), in an order where
    each command's inputs exist: faces, audio, transcribe, then the three embedding stages."""
    cfg = ["--config", str(work / "config.yaml")]
    wav = str(work / "results" / "audio" / f"{clip}.wav")
    faces = str(work / "results" / "faces" / f"{clip}.h5")
    transcript = str(work / "results" / "transcripts" / f"{clip}.parquet")
    feat = work / "results" / "features"
    embed = ["emofusion", "embed", *cfg]
    checkpoint = ["--whisper-checkpoint", str(work / "whisper.pt")]
    return [
        (
            "faces",
            ["emofusion", "faces", *cfg, "--video", str(video), "--clip", clip, "--threads", "2", "--out", faces],
        ),
        ("audio", ["emofusion", "audio", *cfg, "--video", str(video), "--audio", str(video), "--out", wav]),
        (
            "transcribe",
            ["emofusion", "transcribe", *cfg, "--audio", wav, *checkpoint, "--threads", "2", "--out", transcript],
        ),
        (
            "embed_visual",
            [
                *embed,
                "--modality",
                "visual",
                "--backbone",
                "fer",
                "--faces",
                faces,
                "--video",
                str(video),
                "--threads",
                "2",
                "--out",
                str(feat / "visual" / "fer" / f"{clip}.h5"),
            ],
        ),
        (
            "embed_audio",
            [
                *embed,
                "--modality",
                "audio",
                "--backbone",
                "egemaps",
                "--audio",
                wav,
                "--clips",
                clip,
                "--threads",
                "1",
                "--out",
                str(feat / "audio" / "egemaps" / f"{clip}.h5"),
            ],
        ),
        (
            "embed_text",
            [
                *embed,
                "--modality",
                "text",
                "--backbone",
                "minilm",
                "--transcript",
                transcript,
                "--audio",
                wav,
                "--clips",
                clip,
                "--threads",
                "1",
                "--out",
                str(feat / "text" / "minilm" / f"{clip}.h5"),
            ],
        ),
    ]


def import_profile(cmd: list[str], cwd: Path) -> dict:
    """One more run of an ``emofusion`` command under ``python -X importtime`` (itself a little slower): seconds of
    all its imports, of torch (wherever it was first imported from) and the three costliest top-level packages."""
    _, out = timed([sys.executable, "-X", "importtime", "-m", "emofusion.cli", *cmd[1:]], cwd)
    top: dict[str, float] = {}
    torch_s = 0.0
    for line in out.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( +)(\S+)$", line)
        if not m:
            continue
        seconds, depth, name = int(m.group(1)) / 1e6, len(m.group(2)), m.group(3)
        if name == "torch":
            torch_s = seconds
        if depth == 1:
            top[name] = top.get(name, 0.0) + seconds
    costly = sorted(top.items(), key=lambda kv: -kv[1])[:3]
    return {"imports_s": sum(top.values()), "torch_s": torch_s, "top": costly}


def fixed_costs(work: Path, video: Path, clip: str, repeat: int) -> tuple[dict[str, float], dict[str, dict]]:
    """Wall seconds of each stage's command on one tiny clip (fastest of ``repeat``), plus the interpreter alone
    and ``import torch``, and each command's imports (:func:`import_profile`); the Whisper checkpoint is converted
    once first (a per-corpus job, not timed)."""
    timed(["emofusion", "convert-whisper", "--out", str(work / "whisper.pt")], work)
    costs = {
        "python": timed([sys.executable, "-c", "pass"], work, repeat)[0],
        "import torch": timed([sys.executable, "-c", "import torch"], work, repeat)[0],
    }
    imports = {}
    for stage, cmd in stage_commands(work, video, clip):
        costs[stage] = timed(cmd, work, repeat)[0]
        imports[stage] = import_profile(cmd, work)
    return costs, imports


def compute_hours(files: list[Path], gpus: int) -> dict[str, dict]:
    """Stage -> the compute row ``benchmarks/affwild2.py`` projects for it from ``files`` (first match)."""
    rows = [r for d in affwild2.load(files) for r in affwild2.rows_for(d, gpus)]
    found = {}
    for stage, prefix in COMPUTE_ROWS.items():
        match = [r for r in rows if r["stage"].startswith(prefix)]
        if match:
            found[stage] = match[0]
    return found


def projection(
    jobs: dict[str, int],
    costs: dict[str, float],
    clips: int,
    compute: dict[str, dict],
    gpus: int,
    submit_s: float = 0.0,
) -> list[dict]:
    """Per stage: Aff-Wild2 jobs (this corpus's dry-run count scaled to 594 clips), fixed hours on one node (the
    jobs' start-up one after another) and on a Slurm cluster of ``gpus`` devices (each job also waits ``submit_s``
    for its submission and scheduling), compute hours on one device beside them and the fixed cost's share of a
    job's time (fixed / (fixed + compute), on one device)."""
    scale = affwild2.VIDEOS / clips
    per_stage = stage_jobs(jobs)
    rows = []
    for stage in STAGES:
        planned, sharded = per_stage.get(stage, (0, False))
        # a job per clip scales with the clips; shards are as many as the dry run planned (at most a few dozen)
        n = planned if sharded else round(planned * scale)
        fixed_h = n * costs[stage] / 3600
        c = compute.get(stage)
        rows.append(
            {
                "stage": stage,
                "jobs": n,
                "fixed_s": costs[stage],
                "fixed_h": fixed_h,
                "fixed_h_n": n * (costs[stage] + submit_s) / 3600 / gpus,
                "compute_h": c["hours"] if c else None,
                "compute_source": f"{c['stage']}: {c['source']}" if c else None,
                "share": fixed_h / (fixed_h + c["hours"]) if c and c["hours"] > 0 else None,
            }
        )
    return rows


def print_tables(fig: dict, gpus: int) -> None:
    sizes, plan_ = fig["corpus"], fig["plan"]
    print(
        f"\nCorpus: {fig['clips']} clips ({sizes['train']} train, {sizes['validation']} validation, "
        f"{sizes['test']} test) in {sizes['videos']} videos; corpus built in {fig['build_s']:.1f} s\n"
    )
    print("| rule | jobs planned |\n|---|--:|")
    for stage, (n, sharded) in stage_jobs(plan_["jobs"]).items():
        print(f"| {stage}_shard0..{n - 1} (a rule each) | {n} |" if sharded else f"| {stage} | {n} |")
    print(f"| total | {sum(plan_['jobs'].values())} |\n")
    goal = f"goal < {GOAL_PLAN_S:.0f} s at 594 clips on 2 cores"
    planning = f"dry run (`snakemake -n`): {plan_['dry_run_s']:.1f} s; `emofusion status`: {plan_['status_s']:.1f} s"
    print(f"{planning} ({goal})\n")
    costs = fig["fixed_s"]
    print(f"python -c pass: {costs['python']:.2f} s; python -c 'import torch': {costs['import torch']:.2f} s\n")
    print(
        "What a job pays before its first frame (one tiny clip; imports measured in another run under -X importtime):\n"
    )
    print("| stage | wall s | imports s | of which torch s | costliest imports (s) |\n|---|--:|--:|--:|---|")
    for stage, imp in fig["imports"].items():
        top = ", ".join(f"{name} {sec:.2f}" for name, sec in imp["top"])
        print(f"| {stage} | {costs[stage]:.2f} | {imp['imports_s']:.2f} | {imp['torch_s']:.2f} | {top} |")
    print()
    print(
        f"| stage | fixed s per job | Aff-Wild2 jobs | fixed h, 1 node | fixed h, Slurm {gpus} devices "
        f"(+{fig['submit_s']:g} s per job) "
        "| compute h, 1 device | fixed share | compute source |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|---|")
    total_fixed = total_compute = 0.0
    for r in fig["projection"]:
        comp = f"{r['compute_h']:.2f}" if r["compute_h"] is not None else "-"
        share = f"{100 * r['share']:.1f} %" if r["share"] is not None else "-"
        print(
            f"| {r['stage']} | {r['fixed_s']:.2f} | {r['jobs']} | {r['fixed_h']:.2f} | {r['fixed_h_n']:.2f} | {comp} "
            f"| {share} | {r['compute_source'] or 'no --compute figure'} |"
        )
        total_fixed += r["fixed_h"]
        total_compute += r["compute_h"] or 0.0
    total_n = sum(r["fixed_h_n"] for r in fig["projection"])
    line = f"| all | | {sum(r['jobs'] for r in fig['projection'])} | {total_fixed:.2f} | {total_n:.2f} |"
    if all(r["compute_h"] is not None for r in fig["projection"]):
        share = total_fixed / (total_fixed + total_compute)
        line += f" {total_compute:.2f} | {100 * share:.1f} % (goal <= {100 * GOAL_SHARE:.0f} %) | |"
    else:
        line += " - | - | |"
    print(line)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=sum(SPLITS.values()), help="clips in the corpus (default 594)")
    p.add_argument("--quick", action="store_true", help="24 clips, one timing each (a smoke run)")
    p.add_argument("--repeat", type=int, default=2, help="timed runs of each command (the fastest is reported)")
    p.add_argument("--gpus", type=int, default=8, help="devices (Slurm jobs) for the projection (default 8)")
    p.add_argument(
        "--submit-s",
        type=float,
        default=0.0,
        help="seconds Slurm adds to each job (submission, scheduling; not measured here; default 0)",
    )
    p.add_argument("--compute", nargs="*", type=Path, default=[], help="figure files for benchmarks/affwild2.py")
    p.add_argument("--skip-stages", action="store_true", help="only the corpus and the planning figures")
    p.add_argument("--keep", type=Path, help="build the corpus and project folder here (kept) instead of a temp dir")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.repeat = 24, 1
    if args.clips < 3 or args.repeat < 1 or args.gpus < 1:
        p.error("--clips must be at least 3, --repeat and --gpus at least 1")
    if shutil.which("ffmpeg") is None:
        raise SystemExit("no ffmpeg binary: the synthetic corpus is made with ffmpeg (apt-get install ffmpeg)")
    compute = compute_hours(args.compute, args.gpus) if args.compute else {}
    with tempfile.TemporaryDirectory(prefix="emofusion-scale-") as tmp:
        base = args.keep or Path(tmp)
        t0 = time.perf_counter()
        sizes = build_corpus(base / "corpus", args.clips)
        build_s = time.perf_counter() - t0
        work = workdir_for(base / "project", base / "corpus")
        print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; corpus and project under {base}")
        plan_ = plan(work, args.repeat)
        costs: dict[str, float] = {}
        imports: dict[str, dict] = {}
        if not args.skip_stages:
            video = base / "corpus" / "videos" / "batch1" / "clip0000.mp4"
            costs, imports = fixed_costs(
                work, video, "clip0000_left" if sizes["train"] >= 2 else "clip0000", args.repeat
            )
        fig = {
            "clips": args.clips,
            "corpus": sizes,
            "build_s": build_s,
            "plan": plan_,
            "fixed_s": costs,
            "imports": imports,
            "gpus": args.gpus,
            "load_average": os.getloadavg()[0],
        }
        fig["submit_s"] = args.submit_s
        fig["projection"] = (
            projection(plan_["jobs"], costs, args.clips, compute, args.gpus, args.submit_s) if costs else []
        )
    if costs:
        print_tables(fig, args.gpus)
    else:
        print(fig["plan"])
    if args.json:
        write_figures(args.json, "scale", fig, device="cpu")
    return fig


if __name__ == "__main__":
    main()
    sys.exit(0)
