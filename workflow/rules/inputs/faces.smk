# What workflow/rules/faces.smk reads: the input functions, params, resources and wildcard constraints of
# the face stage. Included at its top (Snakemake's lint wants functions and rules in separate files).
from emofusion.faces.store import check_face_store  # cheap: h5py when called

# A face job's threads and memory: the per-clip rule's, and each shard's (one of its jobs per clip)
FACE_THREADS = 2
FACE_MEM_MB = 4000


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
        args += ["--video", str(CLIPS[c].video), "--clip", c, "--out", layout.FACE_STORE.format(clip=c)]
        if with_crops:
            args += ["--crops", str(CLIPS[c].crops or "")]
    return shlex.join(args)


@functools.cache
def face_rules():
    """The rules that make face stores (forcing one of them makes its stores again)."""
    return ["faces"] if config["clips_per_face_job"] == 1 else [f"faces_shard{i}" for i in range(len(face_shards()))]


def checked_face_store(wildcards):
    """The clip's face store (embed_visual reads it), checked."""
    return intact(layout.FACE_STORE.format(clip=wildcards.clip), check_face_store, face_rules())
