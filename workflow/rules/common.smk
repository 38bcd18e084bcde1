# What every stage file needs: the validated config, the corpus's clips and videos, the config params, the shard
# helpers, the header check of an input, and the wildcard constraints of the ids. Each stage's own input functions
# are in rules/inputs/<stage>.smk, which its stage file includes at its top; paths under results/ come from
# emofusion.layout.
import functools
import json
import os
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace  # the wildcards of one clip or video, for a shard's per-clip helpers

from snakemake.logging import logger as snakemake_logger

from emofusion import layout
from emofusion.config import quiet_defaults, shard_size, validate_workflow_config
from emofusion.corpus import discover
from emofusion.errors import EmofusionError, InputError
from emofusion.repair import rerun
from emofusion.runlog import print_summary as print_run_summary  # the Snakefile's onsuccess / onerror


# Fills defaults and rejects unknown keys, with the schema that ships inside the package (the same file validates
# `emofusion ... --config` runs by hand). Not snakemake.utils.validate: it prints the whole schema for one typo.
# Listing the corpus decodes nothing, so building the DAG stays fast on all of Aff-Wild2.
try:
    validate_workflow_config(config)
    CLIPS = {c.clip: c for c in discover(config["corpus"])}
except EmofusionError as e:
    sys.exit(str(e))  # the message alone: Snakemake's traceback of the include ends in frames that hide it
VIDEOS = {c.video_id: c for c in reversed(list(CLIPS.values()))}  # video id -> one of its clips
# clips_per_*_job: auto resolved for this corpus once, so every rule file reads an integer
for _key, _ids in (("clips_per_face_job", CLIPS), ("clips_per_embed_job", CLIPS), ("clips_per_audio_job", VIDEOS)):
    config[_key] = shard_size(config[_key], len(_ids))


# Keys added after results existed, left out of a rule's params while at their schema default
# (emofusion.config.QUIET_KEYS): a new version with a new option then reruns nothing until the option is used.
QUIET_DEFAULTS = quiet_defaults()


def config_json(*sections):
    """Config sections as one shell-quoted JSON argument. Passed as a param so Snakemake reruns a stage when
    its sections change, and only then. (Per-rule variants are named <rule>_config_json.)"""
    def section(s):
        quiet = QUIET_DEFAULTS.get(s, {})
        return {k: v for k, v in config[s].items() if k not in quiet or v != quiet[k]}
    return shlex.quote(json.dumps({s: section(s) for s in sections}, sort_keys=True))


def output_folder(name):
    """A param: the folder of the rule's output `name`, for commands that write into a folder, so the folder
    always comes from the declared outputs."""
    def folder(wildcards, output):
        return str(Path(output[name]).parent)
    return folder


def input_folder(name):
    """A param: the folder of the rule's input `name` (a run folder read as a whole)."""
    def folder(wildcards, input):
        return str(Path(input[name]).parent)
    return folder


# Shards: with clips_per_*_job N > 1 a stage's clips or videos are cut into jobs of N (one process each, its model
# loaded once). A shard rule's name is no profile's, so it takes the per-clip rule's threads and resources here.
def shards(ids, n):
    """The jobs of a stage cut into shards (a clips_per_*_job N > 1): the ids, sorted, cut into lists of N."""
    ids = sorted(ids)
    return [ids[i : i + n] for i in range(0, len(ids), n)]


def _profile_value(value, scale=1):
    """A set-threads / set-resources / default-resources value, for the shard rules (whose names no profile
    knows). As given (Snakemake wraps them in Resource objects), `scale` times a number (a shard's runtime), or for
    an expression (`attempt * 15`, `max(2 * input.size_mb, 1000)`) a function Snakemake evaluates per job, as it
    does for the rules a profile names."""

    def scaled(result):
        return result * scale if scale != 1 and isinstance(result, (int, float)) else result

    if getattr(value, "is_evaluable", lambda: False)():
        # **aux: Snakemake then passes every job argument (input, threads, attempt, ...); evaluate() keeps those the
        # expression takes
        return lambda wildcards, **aux: scaled(value.evaluate(wildcards, **aux).value)
    return scaled(getattr(value, "value", value))


def shard_threads(rule, default):
    """The threads of the profile's `rule` (set-threads), else that per-clip rule's `default`: a shard is one of its
    jobs."""
    threads = workflow.resource_settings.overwrite_threads.get(rule)
    return default if threads is None else _profile_value(threads)


def shard_resources(rule, ids, mem_mb):
    """The per-clip `rule`'s memory and the profile's resources for it (set-resources: gpu, partition, jobs per
    GPU, ...) for a shard rule, whose name Snakemake's per-rule settings do not know; `runtime` (minutes per clip or
    video, from set-resources or else default-resources) is multiplied by the shard's `ids`."""
    settings = workflow.resource_settings
    given = dict(settings.overwrite_resources.get(rule, {}))
    if "runtime" not in given and "runtime" in dict(settings.default_resources or {}):
        given["runtime"] = dict(settings.default_resources)["runtime"]
    resources = {"mem_mb": mem_mb}
    for key, value in given.items():
        resources[key] = _profile_value(value, len(ids) if key == "runtime" else 1)
    return resources


# Checks before anything starts. Snakemake removes a job's outputs before it runs the job, so a job that is bound to
# fail (a misspelt name in the config, a damaged input) would cost a good transcript, model.pt or labels.h5 first.
# Names are checked when the workflow is read (any run, dry runs included, stops naming the key: each stage file
# resolves its own); inputs by the stages' input functions, while the DAG is built: a damaged file stops the DAG
# naming the command that rebuilds it. (Where the job reading it has outputs already, Snakemake takes an error of its
# input function to mean "no producer", keeps those outputs as they are and starts nothing that needs them: the
# message is then a warning.) The checks are the commands' own (one function, called from both places), cached per
# name or path, and only header-deep (an HDF5 superblock and root attributes, a Parquet footer, an annotation file's
# first line), so building the DAG of all of Aff-Wild2 stays fast.
def _made_again(path, rules):
    """Whether this invocation makes `path` again whatever its state (--forcerun PATH or one of its rules, -F, -f on
    it): then its old content is never read, and the repair this block prints can run."""
    settings = workflow.dag_settings
    if settings.forceall:
        return True
    forced = {os.path.normpath(str(t)) for t in settings.forcerun}
    if settings.forcetargets:
        forced |= {os.path.normpath(str(t)) for t in settings.targets}
    return os.path.normpath(path) in forced or any(r in forced for r in rules)


@functools.cache
def _damage(path, check):
    """What the header `check` of an existing `path` finds wrong, or None (a missing file is made by its rule)."""
    if not os.path.exists(path):
        return None
    try:
        check(path)
    except (EmofusionError, OSError, ValueError, KeyError) as e:
        return str(e)
    return None


def intact(path, check, rules):
    """`path` (an input), after its header `check` when it exists and this run does not make it again (`rules` make
    it): a damaged file stops the DAG with the command that rebuilds it, before Snakemake removes the outputs of the
    jobs reading it."""
    if not _made_again(path, rules):
        problem = _damage(path, check)
        if problem:
            message = (
                f"{path} is damaged: {problem}. No job that reads it starts (it would fail after Snakemake removed "
                f"its outputs); rebuild it first: {rerun(path)}"
            )
            _warn_once(message)
            raise InputError(message)
    return path


@functools.cache
def _warn_once(message):
    snakemake_logger.warning(message)


# The wildcard constraints of the ids every stage shares (each stage file adds its own). An id never holds a slash,
# so a path has only one parse.
wildcard_constraints:
    clip="[^/]+",
    video="[^/]+",
