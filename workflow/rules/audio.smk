# Audio and transcription stages: each video's audio on its frame timeline, then Whisper words with timestamps.
# Per video (the two clips of a two-person video share one audio track and one transcript). The manifest is not
# an input, so changing folds never reruns these; `audio:` / `asr:` changes rerun only their own stage.
# With clips_per_audio_job > 1 the videos are cut into shards instead, one audio and one transcribe job (one
# process: Whisper loaded once) per shard; the outputs are the same (tests/test_workflow.py compares them).


include: "inputs/audio.smk"

if config["clips_per_audio_job"] == 1:

    rule audio:
        input:
            video=audio_video,
            audio=audio_source,
        output:
            wav=layout.AUDIO_WAV,
            meta=layout.AUDIO_META,
        log:
            "logs/audio/{video}.log",
        benchmark:
            "logs/benchmarks/audio/{video}.tsv"
        params:
            cfg=config_json("audio"),
        threads: AUDIO_THREADS
        resources:
            mem_mb=AUDIO_MEM_MB,
        conda:
            "../../envs/emofusion.yaml"
        shell:
            "emofusion audio --config-json {params.cfg} --video {input.video:q} --audio {input.audio:q} "
            "--out {output.wav:q} > {log:q} 2>&1"

else:
    for shard, videos in enumerate(audio_shards()):

        rule:
            name:
                f"audio_shard{shard}"
            input:
                audio_shard_inputs(videos),
            output:
                [p for v in videos for p in audio_outputs(v)],
            log:
                f"logs/audio/shard{shard}.log",
            benchmark:
                f"logs/benchmarks/audio/shard{shard}.tsv"
            params:
                cfg=config_json("audio"),
                videos=audio_shard_arguments(videos),
            threads: shard_threads("audio", AUDIO_THREADS)
            resources:
                **shard_resources("audio", videos, AUDIO_MEM_MB),
            conda:
                "../../envs/emofusion.yaml"
            shell:
                "emofusion audio --config-json {params.cfg} {params.videos} > {log:q} 2>&1"


rule convert_whisper:
    output:
        layout.WHISPER_CHECKPOINT,
    log:
        "logs/convert_whisper/{model}.log",
    params:
        model=bundled_model,
        weights=converted_weights,
    threads: 1
    resources:
        mem_mb=2000,
    localrule: True
    conda:
        "../../envs/emofusion.yaml"
    shell:
        "emofusion convert-whisper --model {params.model} --out {output:q} > {log:q} 2>&1"


if config["clips_per_audio_job"] == 1:

    rule transcribe:
        input:
            audio=layout.AUDIO_WAV,
            meta=layout.AUDIO_META,
            whisper=converted_whisper,
            model=asr_model_files,
        output:
            # update(): a failing transcription (a damaged audio file) puts the previous transcript back, since
            # transcripts cost hours of Whisper on a large corpus; the command writes it atomically
            update(layout.TRANSCRIPT),
        log:
            "logs/transcribe/{video}.log",
        benchmark:
            "logs/benchmarks/transcribe/{video}.tsv"
        params:
            cfg=config_json("asr"),
            checkpoint=whisper_checkpoint_option,
            weights=asr_weights,
        threads: TRANSCRIBE_THREADS
        resources:
            mem_mb=TRANSCRIBE_MEM_MB,
        conda:
            "../../envs/emofusion.yaml"
        shell:
            "emofusion transcribe --config-json {params.cfg} --audio {input.audio:q} {params.checkpoint} "
            "--threads {threads} --out {output:q} > {log:q} 2>&1"

else:
    for shard, videos in enumerate(audio_shards()):

        rule:
            name:
                f"transcribe_shard{shard}"
            input:
                [p for v in videos for p in audio_outputs(v)],
                whisper=converted_whisper,
                model=asr_model_files,
            output:
                # update() as in the per-video rule: a failing shard puts the previous transcripts back
                [update(layout.TRANSCRIPT.format(video=v)) for v in videos],
            log:
                f"logs/transcribe/shard{shard}.log",
            benchmark:
                f"logs/benchmarks/transcribe/shard{shard}.tsv"
            params:
                cfg=config_json("asr"),
                checkpoint=whisper_checkpoint_option,
                weights=asr_weights,
                videos=transcribe_shard_arguments(videos),
            threads: shard_threads("transcribe", TRANSCRIBE_THREADS)
            resources:
                **shard_resources("transcribe", videos, TRANSCRIBE_MEM_MB),
            conda:
                "../../envs/emofusion.yaml"
            shell:
                "emofusion transcribe --config-json {params.cfg} {params.videos} {params.checkpoint} "
                "--threads {threads} > {log:q} 2>&1"
