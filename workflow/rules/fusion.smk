# Fusion stage: per (experiment, fold, seed) a training run and its evaluation, then one report over the grid.
# Each run's params carry only its own experiment and preset (train_config_json), so editing one
# experiment reruns that experiment's train/evaluate and the report; the stores are inputs, never rebuilt here.


include: "inputs/fusion.smk"

rule train:
    input:
        unpack(checked_fusion_inputs),
    output:
        model=f"{RUN}/model.pt",
        epochs=f"{RUN}/log.jsonl",
        run=f"{RUN}/run.json",
    log:
        "logs/train/{experiment}/fold{fold}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train/{experiment}/fold{fold}/seed{seed}.tsv"
    params:
        cfg=train_config_json,
        stores=fusion_store_options,
        out=output_folder("run"),
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/emofusion.yaml"
    shell:
        "emofusion train --config-json {params.cfg} --experiment {wildcards.experiment} --fold {wildcards.fold} "
        "--seed {wildcards.seed} --manifest {input.manifest:q} --labels {input.labels:q} {params.stores} "
        "--threads {threads} --out {params.out:q} > {log:q} 2>&1"


rule evaluate:
    input:
        unpack(checked_fusion_inputs),
        model=f"{RUN}/model.pt",
        run=f"{RUN}/run.json",
    output:
        predictions=f"{RUN}/predictions.parquet",
        metrics=f"{RUN}/metrics.json",
    log:
        "logs/evaluate/{experiment}/fold{fold}/seed{seed}.log",
    params:
        cfg=evaluate_config_json,
        stores=fusion_store_options,
        run=input_folder("run"),
        out=output_folder("metrics"),
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/emofusion.yaml"
    shell:
        "emofusion evaluate --config-json {params.cfg} --run {params.run:q} --manifest {input.manifest:q} "
        "--labels {input.labels:q} {params.stores} --threads {threads} --out {params.out:q} > {log:q} 2>&1"


rule report:
    input:
        manifest=layout.MANIFEST,
        metrics=fusion_run_files("metrics.json"),
        predictions=fusion_run_files("predictions.parquet"),
        runs=fusion_run_files("run.json"),
        epochs=fusion_run_files("log.jsonl"),
        sample=sample_submission,
    output:
        table=report(str(layout.REPORT / "results.csv"), caption="../report/results.rst", category="Results"),
        markdown=str(layout.REPORT / "results.md"),
        provenance=str(layout.REPORT / "provenance.json"),
        plots=report(directory(str(layout.REPORT / "plots")), patterns=["{name}.png"], caption="../report/plots.rst",
                     category="Plots"),
        submission=directory(str(layout.REPORT / "submission")),
    log:
        "logs/report/report.log",
    params:
        cfg=config_json("report", "fusion"),
        runs=fusion_run_dirs(),
        out=output_folder("table"),
    localrule: True
    conda:
        "../../envs/emofusion.yaml"
    shell:
        "emofusion report --config-json {params.cfg} --manifest {input.manifest:q} --runs {params.runs} "
        "--out {params.out:q} > {log:q} 2>&1"
