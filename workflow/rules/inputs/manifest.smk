# What workflow/rules/manifest.smk reads: the input functions, params, resources and wildcard constraints of
# the manifest and labels rules. Included at its top (Snakemake's lint wants functions and rules in separate files).
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
