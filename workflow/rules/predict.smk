# Apply a trained model to videos of your own (`snakemake predict`, config section `predict:`). One job per video
# runs `emofusion predict`, which calls the stages' own functions with the settings the model's stores were built
# with (not this config's faces:/audio:/asr:/features: sections) and caches them in results/predict/.cache, so a
# second model on the same backbones only runs the model. Per video, so a cluster spreads the videos over nodes.
# The files are this rule's declared outputs (Snakemake's to replace), hence --overwrite; --name puts the
# folder's name into the file names, as `emofusion predict` names them by model.


include: "inputs/predict.smk"

rule predict_video:
    input:
        video=predict_video_file,
        model=predict_model_files,
    output:
        **predict_outputs(),
    log:
        "logs/predict/{predict_name}/{stem}.log",
    benchmark:
        "logs/benchmarks/predict/{predict_name}/{stem}.tsv"
    params:
        model=predict_model_option,
        options=predict_options,
        out=output_folder("csv"),
    threads: 2
    resources:
        mem_mb=4000,
    conda:
        "../../envs/emofusion.yaml"
    shell:
        "emofusion predict {input.video:q} {params.model} {params.options} --out {params.out:q} "
        "--name {wildcards.predict_name} --overwrite --cache results/predict/.cache --threads {threads} > {log} 2>&1"
