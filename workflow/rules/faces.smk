# Face stage: the subject's aligned face in every frame of each clip (MTCNN on the video, or the corpus's
# pre-aligned crops where it ships them). Per clip, so a new clip or a changed `faces:` section reruns only
# what it touches; the manifest is not an input, so changing folds never reruns this costly stage.
# With clips_per_face_job > 1 the clips are cut into shards instead, one job (one process, MTCNN loaded
# once) per shard; the stores are the same (tests/test_workflow.py compares them).


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


if config["clips_per_face_job"] == 1:

    rule faces:
        input:
            unpack(face_inputs),
        output:
            layout.FACE_STORE,
        log:
            "logs/faces/{clip}.log",
        benchmark:
            "logs/benchmarks/faces/{clip}.tsv"
        params:
            cfg=config_json("faces"),
            crops=face_crops_option,
        threads: FACE_THREADS
        resources:
            mem_mb=FACE_MEM_MB,
        conda:
            "../../envs/emofusion.yaml"
        shell:
            "emofusion faces --config-json {params.cfg} --video {input.video:q} --clip {wildcards.clip} {params.crops} "
            "--threads {threads} --out {output:q} > {log:q} 2>&1"

else:
    for shard, shard_clips in enumerate(face_shards()):

        rule:
            name:
                f"faces_shard{shard}"
            input:
                face_shard_inputs(shard_clips),
            output:
                [layout.FACE_STORE.format(clip=clip) for clip in shard_clips],
            log:
                f"logs/faces/shard{shard}.log",
            benchmark:
                f"logs/benchmarks/faces/shard{shard}.tsv"
            params:
                cfg=config_json("faces"),
                clips=face_shard_arguments(shard_clips),
            threads: shard_threads("faces", FACE_THREADS)
            resources:
                **shard_resources("faces", shard_clips, FACE_MEM_MB),
            conda:
                "../../envs/emofusion.yaml"
            shell:
                "emofusion faces --config-json {params.cfg} {params.clips} --threads {threads} > {log:q} 2>&1"
