# Audio and transcription stages: each video's audio on its frame timeline, then Whisper words with timestamps.
# Per video (the two clips of a two-person video share one audio track and one transcript). The manifest is not
# an input, so changing folds never reruns these; `audio:` / `asr:` changes rerun only their own stage.
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
