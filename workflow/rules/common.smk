# Configuration, corpus listing and named input helpers shared by every stage file.
import json
import shlex

from snakemake.utils import validate

from emofusion.corpus import discover


# Fills defaults and rejects unknown keys; the same schema validates `emofusion ... --config` runs by hand.
validate(config, "../schemas/config.schema.yaml")

# Listing the corpus decodes nothing, so building the DAG stays fast on all of Aff-Wild2.
CLIPS = {c.clip: c for c in discover(config["corpus"])}
VIDEOS = {c.video_id: c for c in reversed(list(CLIPS.values()))}  # video id -> one of its clips


def config_json(*sections):
    """Config sections as one shell-quoted JSON argument. Passed as a param so Snakemake reruns a stage when
    its sections change, and only then."""
    return shlex.quote(json.dumps({s: config[s] for s in sections}, sort_keys=True))


def all_videos():
    return sorted({c.video for c in CLIPS.values()})


def all_annotations():
    return sorted({c.annotation for c in CLIPS.values() if c.annotation})


def feature_targets():
    """Outputs of the extraction stages present in this version of the workflow."""
    targets = []
    targets += expand("results/faces/{clip}.h5", clip=sorted(CLIPS))
    # --- audio stage targets ---
    return targets


# Face stage (workflow/rules/faces.smk)
def face_inputs(wildcards):
    """The clip's video (its frame timeline) and, where the corpus ships them, its pre-aligned crops folder."""
    spec = CLIPS[wildcards.clip]
    inputs = {"video": spec.video}
    if spec.crops:
        inputs["crops"] = spec.crops
    return inputs


def face_crops_option(wildcards, input):
    """`--crops DIR` for clips with pre-aligned crops (no detection), else nothing."""
    return f"--crops {shlex.quote(input.crops)}" if "crops" in input.keys() else ""

