# Corpus listing and labels: cheap, run locally.


include: "inputs/manifest.smk"

rule manifest:
    input:
        videos=all_videos(),
    output:
        # update(): Snakemake keeps the previous manifest while the job runs and puts it back if the job fails
        # (a bad video then leaves the last good manifest in place instead of deleting it).
        update(layout.MANIFEST),
    log:
        "logs/manifest/manifest.log",
    params:
        cfg=config_json("corpus", "folds"),
    localrule: True
    conda:
        "../../envs/emofusion.yaml"
    shell:
        "emofusion manifest --config-json {params.cfg} --out {output:q} > {log:q} 2>&1"


rule labels:
    input:
        manifest=layout.MANIFEST,
        annotations=checked_annotations,
    output:
        # update(), as for the manifest: a failing labels job (an annotation row that is no number) puts the last good
        # labels back instead of leaving none
        update(layout.LABELS),
    log:
        "logs/labels/labels.log",
    params:
        cfg=config_json("corpus"),
    localrule: True
    conda:
        "../../envs/emofusion.yaml"
    shell:
        "emofusion labels --config-json {params.cfg} --manifest {input.manifest:q} --out {output:q} > {log:q} 2>&1"
