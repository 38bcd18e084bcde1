# What workflow/rules/fusion.smk reads: the input functions, params, resources and wildcard constraints of
# the fusion stage. Included at its top (Snakemake's lint wants functions and rules in separate files).
from emofusion.features.store import read_attrs as check_feature_store
from emofusion.labels import check_labels_store
from emofusion.training.experiments import experiment_section, experiment_stores, grid, resolve_experiment


@functools.cache
def checked_experiment(name):
    """fusion.experiments.<name> resolved as `emofusion train` resolves it: preset, training keys, model name."""
    return resolve_experiment(config["fusion"], name)


# Read when the workflow is: a misspelt name stops every run, whatever is up to date. The model registry imports
# torch (about 2 s), only when experiments are configured.
for _experiment in sorted(config["fusion"]["experiments"]):
    checked_experiment(_experiment)

FUSION_RUNS = [str(layout.run_dir(e, f, s)) for e, f, s in grid(config["fusion"])]
RUN = str(layout.run_dir("{experiment}", "{fold}", "{seed}"))  # a run folder, as the train and evaluate rules' pattern


def fusion_inputs(wildcards):
    """Manifest, labels and the experiment's feature stores, one named input per modality."""
    return {"manifest": layout.MANIFEST, "labels": layout.LABELS,
            **experiment_stores(config["fusion"], wildcards.experiment)}


def checked_fusion_inputs(wildcards):
    """fusion_inputs of a train or evaluate job, after checking the headers of the labels and of each store it
    reads."""
    inputs = fusion_inputs(wildcards)
    intact(inputs["labels"], check_labels_store, ["labels"])
    for modality in experiment_stores(config["fusion"], wildcards.experiment):
        intact(inputs[modality], check_feature_store, ["embed_merge"])
    return inputs


def fusion_store_options(wildcards, input):
    """`--store MODALITY=PATH` for each store the experiment reads."""
    stores = experiment_stores(config["fusion"], wildcards.experiment)
    return " ".join(f"--store {m}={shlex.quote(input[m])}" for m in stores)


def train_config_json(wildcards):
    """Only this experiment, its preset and the device: editing another experiment leaves this param alone."""
    return shlex.quote(json.dumps(experiment_section(config["fusion"], wildcards.experiment), sort_keys=True))


def evaluate_config_json(wildcards):
    """As train_config_json, plus the smoothing candidates evaluation chooses from."""
    section = experiment_section(config["fusion"], wildcards.experiment, smoothing=True)
    return shlex.quote(json.dumps(section, sort_keys=True))


def fusion_run_files(name):
    """A file of every run of the grid (fusion.experiments x folds x seeds)."""
    return [f"{run}/{name}" for run in FUSION_RUNS]


def fusion_run_dirs():
    return " ".join(shlex.quote(run) for run in FUSION_RUNS)


def sample_submission(wildcards):
    """The organisers' sample prediction file, when report.sample_submission names one: an input, so a new file
    reruns the report, and a missing one stops the DAG before anything runs."""
    return config["report"]["sample_submission"] or []


def fusion_targets():
    """The report and everything it relies on (every run's files, the experiments' stores), when any experiment is
    configured. Named as targets so a deleted run file or store is made again: Snakemake does not rerun a job
    whose outputs exist when one of its inputs is gone."""
    if not FUSION_RUNS:
        return []
    stores = {p for e in config["fusion"]["experiments"] for p in experiment_stores(config["fusion"], e).values()}
    return [*sorted(stores), *(f for name in layout.RUN_FILES for f in fusion_run_files(name)),
            *(str(layout.REPORT / name) for name in (*layout.REPORT_FILES, *layout.REPORT_FOLDERS))]


wildcard_constraints:
    experiment="[A-Za-z0-9][A-Za-z0-9_.-]*",
    fold="[0-9]+",
    seed="[0-9]+",
