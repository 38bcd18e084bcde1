"""Corpus readers: the Aff-Wild2 (ABAW) layout and a generic clip manifest, into one manifest table.

A *clip* is one annotated track. Aff-Wild2 splits two-person videos into ``<video>_left`` / ``<video>_right``:
two clips that share one video and one audio track. :func:`discover` lists clips without decoding anything (it
runs when Snakemake builds its DAG); :func:`build_manifest` adds frame counts and rates from the decoded videos
and the fold assignment.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emofusion.container import VIDEO_SUFFIXES, cut_short, not_a_container, sniff_video
from emofusion.errors import ConfigError, InputError
from emofusion.log import logger, progress
from emofusion.video import probe, timeline

if TYPE_CHECKING:  # pandas (0.3-0.5 s) is imported where a table is made: a face job only checks its clip id
    import pandas as pd

SPLITS = ("train", "validation", "test")
ANNOTATION_DIR = Path("annotations") / "VA_Estimation_Challenge"
ANNOTATION_SPLITS = {"Train_Set": "train", "Validation_Set": "validation", "Test_Set": "test"}
SIDES = ("_left", "_right")
_CLIP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

MANIFEST_COLUMNS = [
    "clip",
    "video_id",
    "video",
    "audio",
    "split",
    "fold",
    "annotation",
    "crops",
    "subject",
    "frames",
    "fps",
]


@dataclass(frozen=True)
class ClipSpec:
    """One clip as listed by the corpus, before any decoding. Paths are strings (as given or resolved)."""

    clip: str
    video_id: str
    video: str
    audio: str
    split: str
    annotation: str | None = None
    crops: str | None = None
    subject: str | None = None


def validate_clip_id(clip: str, *, source: str) -> str:
    """Clip ids become file names under results/: no separators, no `..`, no leading dot or dash."""
    if not isinstance(clip, str) or not _CLIP_ID.match(clip) or ".." in clip:
        raise InputError(
            f"{source}: clip id {clip!r} is not allowed; use letters, digits, '.', '_' and '-' only, "
            "starting with a letter or digit, without '..' or path separators"
        )
    return clip


def side_of(clip: str) -> str | None:
    """'left' / 'right' for a two-person Aff-Wild2 clip, else None."""
    for s in SIDES:
        if clip.endswith(s):
            return s[1:]
    return None


def discover(corpus: dict[str, Any]) -> list[ClipSpec]:
    """List the clips of the configured corpus (``config["corpus"]``), sorted by clip id. Decodes nothing."""
    fmt = corpus["format"]
    specs = _discover_affwild2(corpus) if fmt == "affwild2" else _discover_manifest(corpus)
    if corpus.get("on_bad_video") == "skip":
        # Only the cheap header check here (the DAG is built from this list); the manifest job decodes fully.
        bad = {s.video: reason for s in specs if (reason := sniff_video(s.video))}
        for video, reason in sorted(bad.items()):
            logger.warning("corpus.on_bad_video is skip: leaving out %s (%s)", video, reason)
        specs = [s for s in specs if s.video not in bad]
    if not specs:
        raise InputError(f"corpus ({fmt}) has no clips: check corpus.root / corpus.manifest")
    seen: dict[str, ClipSpec] = {}
    for s in specs:
        if s.clip in seen:
            raise InputError(
                f"clip {s.clip!r} is listed twice ({seen[s.clip].annotation or seen[s.clip].video} "
                f"and {s.annotation or s.video}); clip ids must be unique"
            )
        seen[s.clip] = s
    # Two videos with one id would overwrite each other's per-video outputs (results/audio/<video_id>.wav).
    # The clips of one video share its audio output too, so they must name the same audio source.
    by_id: dict[str, ClipSpec] = {}
    for s in specs:
        first = by_id.setdefault(s.video_id, s)
        if first.video != s.video:
            raise InputError(
                f"videos {first.video} and {s.video} share the id {s.video_id!r}; "
                "rename one (video ids are file stems and must be unique)"
            )
        if first.audio != s.audio:
            raise InputError(
                f"clips {first.clip!r} and {s.clip!r} share the video {s.video} but name different "
                f"audio ({first.audio} and {s.audio}); give both the same audio file"
            )
    return sorted(specs, key=lambda s: s.clip)


def _discover_affwild2(corpus: dict[str, Any]) -> list[ClipSpec]:
    root = Path(corpus["root"])
    if not root.is_dir():
        raise ConfigError(
            f"corpus.root: folder {root} does not exist; set corpus.root to your Aff-Wild2 folder "
            "(with videos/ and annotations/) or use corpus.format: manifest"
        )
    video_dir = root / "videos"
    if not video_dir.is_dir():
        raise InputError(
            f"{root}: no videos/ folder; an Aff-Wild2 root holds videos/, annotations/ and optionally cropped_aligned/"
        )
    videos: dict[str, Path] = {}
    for p in sorted(video_dir.rglob("*")):
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            if p.stem in videos:
                raise InputError(f"two videos named {p.stem!r}: {videos[p.stem]} and {p}; keep one")
            videos[p.stem] = p

    annotated: dict[str, tuple[str, Path | None]] = {}
    ann_root = root / ANNOTATION_DIR
    if not ann_root.is_dir():
        raise InputError(f"{root}: no {ANNOTATION_DIR}/ folder with Train_Set/ and Validation_Set/")
    for folder, split in ANNOTATION_SPLITS.items():
        for p in sorted((ann_root / folder).glob("*.txt")):
            annotated[p.stem] = (split, p)
    if corpus.get("test_list"):
        test_list = Path(corpus["test_list"])
        if not test_list.is_file():
            raise ConfigError(f"corpus.test_list: file {test_list} does not exist")
        for line in test_list.read_text().splitlines():
            name = line.strip()
            if name and not name.startswith("#"):
                annotated.setdefault(name, ("test", None))

    specs = []
    for clip, (split, ann) in annotated.items():
        source = str(ann) if ann else str(corpus["test_list"])
        validate_clip_id(clip, source=source)
        video_id = clip if clip in videos else clip.rsplit("_", 1)[0] if side_of(clip) else None
        if video_id not in videos:
            raise InputError(
                f"{source}: no video for clip {clip!r} under {video_dir} (looked for "
                f"{clip}.* and, for _left/_right clips, the video without the suffix)"
            )
        crops = root / "cropped_aligned" / clip
        use_crops = corpus["use_cropped_aligned"] and crops.is_dir()
        specs.append(
            ClipSpec(
                clip=clip,
                video_id=video_id,
                video=str(videos[video_id]),
                audio=str(videos[video_id]),
                split=split,
                annotation=str(ann) if ann else None,
                crops=str(crops) if use_crops else None,
            )
        )
    return specs


def unannotated_videos(corpus: dict[str, Any]) -> list[str]:
    """Videos under an Aff-Wild2 root that no annotation file nor the test list names (not part of the corpus;
    reported, never silently dropped). Always empty for format manifest, which lists its videos itself."""
    if corpus["format"] != "affwild2":
        return []
    video_dir = Path(corpus["root"]) / "videos"
    used = {s.video for s in _discover_affwild2(corpus)}
    return sorted(
        str(p)
        for p in video_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and str(p) not in used
    )


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False)
    raise ConfigError(f"corpus.manifest: {path} must be a .csv, .tsv or .parquet file")


def _discover_manifest(corpus: dict[str, Any]) -> list[ClipSpec]:
    if not corpus.get("manifest"):
        raise ConfigError("corpus.manifest: set it to a CSV/Parquet clip table when corpus.format is manifest")
    path = Path(corpus["manifest"])
    if not path.is_file():
        raise ConfigError(f"corpus.manifest: file {path} does not exist")
    df = _read_table(path)
    missing = [c for c in ("clip", "video", "split") if c not in df.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; a manifest needs clip, video, split "
            "and may have annotation, audio, subject, crops"
        )
    base = path.parent

    def resolve(value: Any) -> str | None:
        if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
            return None
        p = Path(str(value).strip())
        return str(p if p.is_absolute() else base / p)

    specs = []
    for row_no, row in enumerate(df.to_dict("records"), start=2):
        where = f"{path} row {row_no}"
        clip = validate_clip_id(str(row["clip"]).strip(), source=where)
        split = str(row["split"]).strip().lower()
        if split not in SPLITS:
            raise InputError(f"{where}: split {row['split']!r} must be one of {', '.join(SPLITS)}")
        video = resolve(row["video"])
        if video is None or not Path(video).is_file():
            raise InputError(
                f"{where}: video {video or '(empty)'} for clip {clip!r} does not exist; "
                "fix the path (relative paths are resolved against the manifest's folder)"
            )
        audio = resolve(row.get("audio")) or video
        if not Path(audio).is_file():
            raise InputError(f"{where}: audio {audio} for clip {clip!r} does not exist")
        ann = resolve(row.get("annotation"))
        if ann is not None and not Path(ann).is_file():
            raise InputError(f"{where}: annotation {ann} for clip {clip!r} does not exist")
        crops = resolve(row.get("crops"))
        if crops is not None and not Path(crops).is_dir():
            raise InputError(f"{where}: crops folder {crops} for clip {clip!r} does not exist")
        subject = row.get("subject")
        subject = None if subject is None or str(subject).strip() in ("", "nan") else str(subject).strip()
        specs.append(
            ClipSpec(
                clip=clip,
                video_id=validate_clip_id(Path(video).stem, source=where),
                video=video,
                audio=audio,
                split=split,
                annotation=ann,
                crops=crops if corpus["use_cropped_aligned"] else None,
                subject=subject,
            )
        )
    return specs


def probe_video(path: str | Path) -> tuple[int, float]:
    """(decoded frame count, average fps) of a video, from a full scan of its stream (exact, no guessing).

    InputError naming the file when it cannot be decoded, or holds fewer frames than its header announces (a cut
    copy, beyond :func:`emofusion.video.probe`'s tolerance: the message gives both counts), so a cut file is a
    bad video, not a short one."""
    t = timeline(path)  # the decoder the stages use, so every count agrees
    probe(path)  # the header's count against the packets: decoding a cut copy only counts what is left
    return t.frames, t.fps


def assign_folds(specs: list[ClipSpec], k: int, seed: int) -> dict[str, int]:
    """Cross-validation group (1..k) of every train/validation clip, -1 for test clips, 0 for all when k == 0.

    Groups are units of clips that must stay together: the subject where known, else the video (both clips
    of a two-person video). Units are sorted, permuted with ``seed`` and dealt round-robin, so the result
    depends only on the clip list, ``k`` and ``seed``.
    """
    unit = {s.clip: (f"subject:{s.subject}" if s.subject else f"video:{s.video_id}") for s in specs}
    pool = sorted({unit[s.clip] for s in specs if s.split != "test"})
    group: dict[str, int] = {}
    if k > 0:
        if len(pool) < k:
            raise ConfigError(
                f"folds.k = {k} but train+validation has only {len(pool)} video/subject groups; lower folds.k"
            )
        order = np.random.default_rng(seed).permutation(len(pool))
        group = {pool[j]: 1 + (i % k) for i, j in enumerate(order)}
    return {s.clip: -1 if s.split == "test" else group.get(unit[s.clip], 0) for s in specs}


def fold_split(manifest: pd.DataFrame, fold: int) -> pd.Series:
    """The split of every clip for one fold: fold 0 = the official split; fold f >= 1 validates on group f."""
    import pandas as pd

    if fold == 0:
        return manifest["split"].copy()
    if fold not in set(manifest["fold"]):
        raise ConfigError(f"fold {fold} does not exist (folds.k = {int(manifest['fold'].max())})")
    out = pd.Series(np.where(manifest["fold"] == fold, "validation", "train"), index=manifest.index)
    out[manifest["split"] == "test"] = "test"
    return out


def build_manifest(cfg: dict[str, Any]) -> pd.DataFrame:
    """The manifest table (MANIFEST_COLUMNS) of the configured corpus, with decoded frame counts and folds."""
    import pandas as pd

    corpus = cfg["corpus"]
    specs = discover({**corpus, "on_bad_video": "error"})  # every listed clip: the full probe below decides
    unannotated = unannotated_videos(corpus)
    if unannotated:
        logger.warning(
            "%d video(s) have no annotation and are not in corpus.test_list, so they are not part of the corpus: %s",
            len(unannotated),
            ", ".join(unannotated),
        )
    # Probe every video before deciding, so one run names every bad file (not just the first).
    probes: dict[str, tuple[int, float]] = {}
    bad: dict[str, str] = {}
    for s in progress(specs, desc="probe videos", unit="clip"):
        if s.video not in probes and s.video not in bad:
            try:
                probes[s.video] = probe_video(s.video)
            except InputError as e:
                # plain words for a file that is no video at all; else the probe's (a cut copy: both frame counts)
                bad[s.video] = not_a_container(Path(s.video)) or str(e)
                cut = cut_short(Path(s.video))
                if cut and "truncated" not in bad[s.video]:
                    bad[s.video] += f" ({cut})"
    if bad and corpus["on_bad_video"] != "skip":
        lines = [
            f"  {video}: {reason} (clip(s) {', '.join(s.clip for s in specs if s.video == video)})"
            for video, reason in sorted(bad.items())
        ]
        raise InputError(
            f"{len(bad)} bad video(s) in the corpus; replace or remove them, or set "
            "corpus.on_bad_video: skip to leave them out:\n" + "\n".join(lines)
        )
    for video, reason in sorted(bad.items()):
        logger.warning("corpus.on_bad_video is skip: leaving out %s (%s)", video, reason)
    specs = [s for s in specs if s.video not in bad]
    if not specs:
        raise InputError("every video of the corpus is bad (see the warnings above); nothing is left to list")
    folds = assign_folds(specs, cfg["folds"]["k"], cfg["folds"]["seed"])
    rows = [
        {**asdict(s), "fold": folds[s.clip], "frames": probes[s.video][0], "fps": probes[s.video][1]} for s in specs
    ]
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    df["fold"] = df["fold"].astype("int64")
    df["frames"] = df["frames"].astype("int64")
    logger.info(
        "manifest: %d clips (%s), %d videos, %d frames",
        len(df),
        ", ".join(f"{n} {s}" for s, n in df["split"].value_counts().sort_index().items()),
        df["video_id"].nunique(),
        int(df.drop_duplicates("video_id")["frames"].sum()),
    )
    # What was left out, for the manifest's metadata (commands/manifest.py records it).
    df.attrs["skipped_videos"] = dict(sorted(bad.items()))
    df.attrs["unannotated_videos"] = unannotated
    return df


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read results/manifest.parquet, checking it has the expected columns."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist; run `emofusion manifest` (or snakemake) first")
    try:
        df = pd.read_parquet(path)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError: not Parquet, truncated
        raise InputError(
            f"manifest {path} is not a readable Parquet table ({type(e).__name__}: {e}); pass "
            "results/manifest.parquet as `emofusion manifest` writes it, or rebuild it with `emofusion manifest`"
        ) from None
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"manifest {path} lacks column(s) {', '.join(missing)}; rebuild it with `emofusion manifest`")
    return df
