# What workflow/rules/predict.smk reads: the input functions, params, resources and wildcard constraints of
# the predict target. Included at its top (Snakemake's lint wants functions and rules in separate files).
from emofusion.container import VIDEO_SUFFIXES
from emofusion.repair import is_workflow_run  # cheap: no torch


def predict_videos():
    """predict.videos as {stem: path}: a list of files or one folder's videos; stems must differ."""
    videos = config["predict"]["videos"]
    if isinstance(videos, str):
        folder = Path(videos)
        if not folder.is_dir():
            raise ValueError(f"predict.videos: {videos} is not a folder; give a folder or a list of video files")
        videos = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    found = {}
    for v in videos:
        stem = Path(v).stem
        if stem in found:
            raise ValueError(f"predict.videos: {found[stem]} and {v} have the same file stem; rename one")
        found[stem] = v
    return found


def predict_is_run():
    """predict.model names a training run folder (else a bundle: a .tar or a folder with bundle.json). A run of this
    workflow's layout counts even before it exists, so `snakemake predict` trains and evaluates it first."""
    model = Path(config["predict"]["model"])
    if model.suffix == ".tar" or (model / "bundle.json").is_file():
        return False
    return (model / "run.json").is_file() or is_workflow_run(model)


def predict_name():
    """results/predict/<name>: predict.name, else experiment-fold-seed of a run folder, else the bundle's stem."""
    p = config["predict"]
    if p["name"]:
        return p["name"]
    model = Path(p["model"])
    if predict_is_run():
        if (model / "run.json").is_file():
            run = json.loads((model / "run.json").read_text())
            return f"{run['experiment']}-fold{run['fold']}-seed{run['seed']}"
        return f"{model.parent.parent.name}-{model.parent.name}-{model.name}"  # .../<experiment>/fold<k>/seed<s>
    return model.name[:-4] if model.name.endswith(".tar") else model.name


def predict_outputs():
    """The files one predict job writes (the overlay video with predict.overlay), named as `emofusion predict
    --name <predict_name>` names them: <stem>[_side].<predict_name>.<ext>."""
    side = f"_{config['predict']['side']}" if config["predict"]["side"] else ""
    base = f"{layout.PREDICT_ROOT}/{{predict_name}}/{{stem}}{side}.{{predict_name}}"
    out = {ext: f"{base}.{ext}" for ext in ("csv", "json", "png")}
    if config["predict"]["overlay"]:
        out["overlay"] = f"{base}.overlay.mp4"
    return out


def predict_targets():
    """Every video's CSV, JSON and plot (and overlay), when predict.model is set."""
    p = config["predict"]
    if not p["model"]:
        raise ValueError("predict.model is not set: give a run folder (results/fusion/<experiment>/fold<k>/seed<s>) "
                         "or a bundle from `emofusion export` in the config's predict: section")
    name, out = predict_name(), []
    for stem in predict_videos():
        out += [path.format(predict_name=name, stem=stem) for path in predict_outputs().values()]
    return out


def predict_video_file(wildcards):
    return predict_videos()[wildcards.stem]


def predict_model_files(wildcards):
    """The model's files as inputs, so a retrained run or a new bundle reruns the predictions."""
    model = Path(config["predict"]["model"])
    if predict_is_run():  # every file predict reads, so a run of this workflow is trained and evaluated first
        return [str(model / n) for n in ("model.pt", "run.json", "metrics.json")]
    if model.is_dir():
        return [str(model / n) for n in ("model.pt", "bundle.json")]
    return [str(model)]


def predict_model_option(wildcards):
    model = Path(config["predict"]["model"])
    flag = "--run" if predict_is_run() else "--model"
    return f"{flag} {shlex.quote(str(model))}"


def predict_options(wildcards):
    p = config["predict"]
    opts = [f"--device {p['device']}"]
    if p["side"]:
        opts.append(f"--side {p['side']}")
    if p["overlay"]:
        opts.append("--overlay")
    return " ".join(opts)


wildcard_constraints:
    predict_name="[A-Za-z0-9][A-Za-z0-9_.-]*",
    stem="[^/]+",
