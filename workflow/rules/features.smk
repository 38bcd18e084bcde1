# Embedding stage: per (modality, backbone) a feature store results/features/<modality>/<backbone>.h5 that the
# fusion models read. Shards first — per clip (visual, from its face store) or per video (audio and text, whose
# clips share the video's rows) — so a new clip embeds only that clip; then one cheap merge per store. The
# params carry only the backbone's own options and its weights' identity, so changing one backbone reruns only
# its shards and store. With clips_per_embed_job > 1 the clips (visual) or videos (audio, text) are cut into
# shards instead, one job (one process, the backbone loaded once) per shard; the shards are the same files
# (tests/test_workflow.py compares them).


include: "inputs/features.smk"

if config["clips_per_embed_job"] == 1:

    rule embed_visual:
        input:
            faces=checked_face_store,
            video=embed_video,
            weights=embed_weight_files("visual"),
        output:
            layout.store_shard("visual", "{backbone}", "{clip}"),
        log:
            "logs/embed_visual/{backbone}/{clip}.log",
        benchmark:
            "logs/benchmarks/embed_visual/{backbone}/{clip}.tsv"
        params:
            cfg=embed_config_json("visual"),
            weights=embed_weights("visual"),
        threads: EMBED_THREADS["visual"]
        resources:
            mem_mb=EMBED_MEM_MB,
        conda:
            "../../envs/emofusion.yaml"
        shell:
            "emofusion embed --config-json {params.cfg} --modality visual --backbone {wildcards.backbone} "
            "--faces {input.faces:q} --video {input.video:q} --threads {threads} --out {output:q} > {log:q} 2>&1"


    rule embed_audio:
        input:
            wav=layout.AUDIO_WAV,
            meta=layout.AUDIO_META,
            weights=embed_weight_files("audio"),
        output:
            layout.store_shard("audio", "{backbone}", "{video}"),
        log:
            "logs/embed_audio/{backbone}/{video}.log",
        benchmark:
            "logs/benchmarks/embed_audio/{backbone}/{video}.tsv"
        params:
            cfg=embed_config_json("audio"),
            weights=embed_weights("audio"),
            clips=video_clips,
        threads: EMBED_THREADS["audio"]
        resources:
            mem_mb=EMBED_MEM_MB,
        conda:
            "../../envs/emofusion.yaml"
        shell:
            "emofusion embed --config-json {params.cfg} --modality audio --backbone {wildcards.backbone} "
            "--audio {input.wav:q} --clips {params.clips} --threads {threads} --out {output:q} > {log:q} 2>&1"


    rule embed_text:
        input:
            transcript=checked_transcript,
            wav=layout.AUDIO_WAV,
            meta=layout.AUDIO_META,
            weights=embed_weight_files("text"),
        output:
            layout.store_shard("text", "{backbone}", "{video}"),
        log:
            "logs/embed_text/{backbone}/{video}.log",
        benchmark:
            "logs/benchmarks/embed_text/{backbone}/{video}.tsv"
        params:
            cfg=embed_config_json("text"),
            weights=embed_weights("text"),
            clips=video_clips,
        threads: EMBED_THREADS["text"]
        resources:
            mem_mb=EMBED_MEM_MB,
        conda:
            "../../envs/emofusion.yaml"
        shell:
            "emofusion embed --config-json {params.cfg} --modality text --backbone {wildcards.backbone} "
            "--transcript {input.transcript:q} --audio {input.wav:q} --clips {params.clips} --threads {threads} "
            "--out {output:q} > {log:q} 2>&1"

else:
    # one job per shard of clips (visual) or videos (audio, text) of each modality, for every backbone: one
    # process, the backbone loaded once, writing each clip's or video's shard as the per-clip rules do
    for modality in layout.MODALITIES:
        for shard, ids in enumerate(embed_shards_of(modality)):

            rule:
                name:
                    f"embed_{modality}_shard{shard}"
                input:
                    embed_shard_inputs(modality, ids),
                    weights=embed_weight_files(modality),
                output:
                    [layout.store_shard(modality, "{backbone}", i) for i in ids],
                log:
                    f"logs/embed_{modality}/{{backbone}}/shard{shard}.log",
                benchmark:
                    f"logs/benchmarks/embed_{modality}/{{backbone}}/shard{shard}.tsv"
                params:
                    cfg=embed_config_json(modality),
                    weights=embed_weights(modality),
                    ids=embed_shard_arguments(modality, ids),
                    modality=modality,
                threads: shard_threads(f"embed_{modality}", EMBED_THREADS[modality])
                resources:
                    **shard_resources(f"embed_{modality}", ids, EMBED_MEM_MB),
                conda:
                    "../../envs/emofusion.yaml"
                shell:
                    "emofusion embed --config-json {params.cfg} --modality {params.modality} "
                    "--backbone {wildcards.backbone} {params.ids} --threads {threads} > {log:q} 2>&1"


rule embed_merge:
    input:
        embed_shards,
    output:
        str(layout.store_path("{modality}", "{backbone}")),
    log:
        "logs/embed_merge/{modality}/{backbone}.log",
    params:
        cfg=embed_merge_config_json,
        clips=all_clips_option,
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../../envs/emofusion.yaml"
    shell:
        "emofusion embed-merge --config-json {params.cfg} --modality {wildcards.modality} "
        "--backbone {wildcards.backbone} --shards {input:q} --clips {params.clips} --out {output:q} > {log:q} 2>&1"
