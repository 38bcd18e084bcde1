# Audio and transcription stages: each video's audio on its frame timeline, then Whisper words with timestamps.
# Per video (the two clips of a two-person video share one audio track and one transcript). The manifest is not
# an input, so changing folds never reruns these; `audio:` / `asr:` changes rerun only their own stage.
# With clips_per_audio_job > 1 the videos are cut into shards instead, one audio and one transcribe job (one
# process: Whisper loaded once) per shard; the outputs are the same (tests/test_workflow.py compares them).
if config["clips_per_audio_job"] == 1:

    rule audio:
        input:
            video=audio_video,
            audio=audio_source,
        output:
            wav="results/audio/{video}.wav",
            meta="results/audio/{video}.json",
        log:
            "logs/audio/{video}.log",
        benchmark:
            "logs/benchmarks/audio/{video}.tsv"
        params:
            cfg=config_json("audio"),
        threads: 1
        resources:
            mem_mb=1000,
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
                [p for v in videos for p in (f"results/audio/{v}.wav", f"results/audio/{v}.json")],
            log:
                f"logs/audio/shard{shard}.log",
            benchmark:
                f"logs/benchmarks/audio/shard{shard}.tsv"
            params:
                cfg=config_json("audio"),
                videos=audio_shard_arguments(videos),
            threads: shard_threads("audio", 1)
            resources:
                **shard_resources("audio", videos, 1000),
            conda:
                "../../envs/emofusion.yaml"
            shell:
                "emofusion audio --config-json {params.cfg} {params.videos} > {log:q} 2>&1"


rule convert_whisper:
    output:
        "results/asr/{model}.pt",
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
            audio="results/audio/{video}.wav",
            meta="results/audio/{video}.json",
            whisper=converted_whisper,
            model=asr_model_files,
        output:
            # update(): a failing transcription (a damaged audio file) puts the previous transcript back, since
            # transcripts cost hours of Whisper on a large corpus; the command writes it atomically
            update("results/transcripts/{video}.parquet"),
        log:
            "logs/transcribe/{video}.log",
        benchmark:
            "logs/benchmarks/transcribe/{video}.tsv"
        params:
            cfg=config_json("asr"),
            checkpoint=whisper_checkpoint_option,
            weights=asr_weights,
        threads: 2
        resources:
            mem_mb=4000,
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
                [p for v in videos for p in (f"results/audio/{v}.wav", f"results/audio/{v}.json")],
                whisper=converted_whisper,
                model=asr_model_files,
            output:
                # update() as in the per-video rule: a failing shard puts the previous transcripts back
                [update(f"results/transcripts/{v}.parquet") for v in videos],
            log:
                f"logs/transcribe/shard{shard}.log",
            benchmark:
                f"logs/benchmarks/transcribe/shard{shard}.tsv"
            params:
                cfg=config_json("asr"),
                checkpoint=whisper_checkpoint_option,
                weights=asr_weights,
                videos=transcribe_shard_arguments(videos),
            threads: shard_threads("transcribe", 2)
            resources:
                **shard_resources("transcribe", videos, 4000),
            conda:
                "../../envs/emofusion.yaml"
            shell:
                "emofusion transcribe --config-json {params.cfg} {params.videos} {params.checkpoint} "
                "--threads {threads} > {log:q} 2>&1"
