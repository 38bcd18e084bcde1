# Face stage: the subject's aligned face in every frame of each clip (MTCNN on the video, or the corpus's
# pre-aligned crops where it ships them). Per clip, so a new clip or a changed `faces:` section reruns only
# what it touches; the manifest is not an input, so changing folds never reruns this costly stage.


rule faces:
    input:
        unpack(face_inputs),
    output:
        "results/faces/{clip}.h5",
    log:
        "logs/faces/{clip}.log",
    benchmark:
        "logs/benchmarks/faces/{clip}.tsv"
    params:
        cfg=config_json("faces"),
        crops=face_crops_option,
    threads: 2
    resources:
        mem_mb=4000,
    conda:
        "../../envs/emofusion.yaml"
    shell:
        "emofusion faces --config-json {params.cfg} --video {input.video:q} --clip {wildcards.clip} {params.crops} "
        "--threads {threads} --out {output:q} > {log:q} 2>&1"
