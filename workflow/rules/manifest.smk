# Corpus listing and labels: cheap, run locally.
from emofusion.labels import check_annotation_header


def all_videos():
    return sorted({c.video for c in CLIPS.values()})


def all_annotations():
    return sorted({c.annotation for c in CLIPS.values() if c.annotation})


@functools.cache
def _checked_annotations():
    for path in all_annotations():
        try:
            check_annotation_header(path)
        except EmofusionError as e:
            message = (
                f"{e}. The labels job does not start (it would fail after Snakemake removed {layout.LABELS}); "
                "fix the file, then run Snakemake again"
            )
            _warn_once(message)
            raise InputError(message) from None
    return all_annotations()


def checked_annotations(wildcards):
    """Every annotation file of the corpus (the labels job reads them all), each file's first line checked."""
    return _checked_annotations()


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
