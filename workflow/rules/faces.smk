# Face stage: the subject's aligned face in every frame of each clip (MTCNN on the video, or the corpus's
# pre-aligned crops where it ships them). Per clip, so a new clip or a changed `faces:` section reruns only
# what it touches; the manifest is not an input, so changing folds never reruns this costly stage.
# With clips_per_face_job > 1 the clips are cut into shards instead, one job (one process, MTCNN loaded
# once) per shard; the stores are the same (tests/test_workflow.py compares them).


include: "inputs/faces.smk"

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
