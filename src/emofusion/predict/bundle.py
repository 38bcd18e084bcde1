"""What a trained model needs to be applied to a new video, from a run folder or a portable bundle.

The *recipe* is a plain JSON dict: the resolved experiment and its windowing, the smoothing windows evaluation
chose (metrics.json), the face / audio / ASR settings and every backbone's name, options, weights sha256 and
licence. For a run folder it is read from what the run's inputs recorded (run.json, each feature store's root
attributes, and the provenance of the shards, face stores, audio sidecars and transcripts the stores were made
from), never from today's config.yaml, which may have changed since.

A bundle (``emofusion export``) is a folder or an uncompressed tar holding ``bundle.json`` (schema version,
recipe, licences, versions) and ``model.pt`` (the run's checkpoint, normaliser included). Loading reads the JSON
and ``torch.load(weights_only=True)``: nothing in a bundle is executed.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from emofusion.errors import InputError
from emofusion.predict.bundle_check import MEMBER_CAPS as MEMBER_CAPS  # re-exported: tests lower the caps
from emofusion.predict.bundle_check import MEMBERS, bundle_members, check_recipe, kind_of
from emofusion.repair import rebuild_store, reevaluate, retrain

# 2: the recipe's windowing records the training rate (older readers would fail on the key, not refuse)
BUNDLE_SCHEMA = 2
RECIPE_SCHEMA = 1
# The detector and ASR weights are part of a model's input pipeline too; their licences travel with a bundle.
DETECTOR_LICENCE = "MIT (facenet-pytorch MTCNN and its shipped weights)"
ASR_LICENCE = "MIT (OpenAI Whisper weights)"


@dataclass
class Model:
    """A loaded model: its checkpoint dict (weights_only), recipe and where it came from."""

    checkpoint: dict[str, Any]
    recipe: dict[str, Any]
    source: dict[str, Any]  # {"kind": "run" | "bundle", "path": ..., "checkpoint_sha256": ...}

    @property
    def name(self) -> str:
        """A short name for output folders: experiment-fold-seed."""
        r = self.recipe
        return f"{r['experiment']}-fold{r['fold']}-seed{r['seed']}"


# ---------------------------------------------------------------------------------------------- from a run folder


def _locate(path: str, near: Path, what: str) -> Path:
    """A path recorded in provenance (often relative to the workflow's directory): as is, or under the nearest
    folder above ``near`` that has it (the workflow directory of a run), or under the current directory."""
    p = Path(path)
    candidates = [p] if p.is_absolute() else [*(base / p for base in near.resolve().parents), Path.cwd() / p]
    for c in candidates:
        if c.exists():
            return c
    raise InputError(
        f"{what} {path} (recorded in the provenance under {near}) does not exist any more; predict "
        "reads the settings a run's inputs were made with from the stage outputs the run was built from: "
        "rebuild them (`snakemake features`), or export a bundle (`emofusion export`) while they exist"
    )


def _shard_provenance(store: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(shard path, shard provenance) of every shard a merged store was made from (a shard is its own)."""
    from emofusion.features.store import read_attrs

    attrs = read_attrs(store)
    shards = attrs["provenance"].get("shards")
    if not shards:
        return [(store, attrs["provenance"])]
    return [(p, read_attrs(p)["provenance"]) for p in (_locate(s["path"], store, "feature shard") for s in shards)]


def _face_settings(store: Path) -> dict[str, Any]:
    """The faces: section and detector weights the face stores of a visual store's clips were made with (from a
    detected clip's store when there is one: clips that ship crops record the same section, but no detector)."""
    from emofusion.faces.store import FaceStore

    found = None
    for shard, prov in _shard_provenance(store):
        for faces in prov.get("faces") or []:
            with FaceStore(_locate(faces, shard, "face store")) as f:
                fprov = f.attrs["provenance"]
            found = {"faces": fprov["config"]["faces"], "detector": fprov.get("detector", {})}
            if found["detector"]:
                return found
    if found is None:
        raise InputError(
            f"feature store {store}: its provenance names no face store; rebuild it (`{rebuild_store(store)}`)"
        )
    return found


def _audio_settings(store: Path) -> dict[str, Any]:
    from emofusion.audio.read import read_audio_metadata

    for shard, prov in _shard_provenance(store):
        if prov.get("audio"):
            meta = read_audio_metadata(_locate(prov["audio"], shard, "audio-stage WAV"))
            return dict(meta["provenance"]["config"]["audio"])
    raise InputError(f"feature store {store}: its provenance names no audio-stage WAV; rebuild it")


def _asr_settings(store: Path) -> dict[str, Any]:
    from emofusion.asr.transcript import transcript_metadata

    for shard, prov in _shard_provenance(store):
        if prov.get("transcript"):
            meta = transcript_metadata(_locate(prov["transcript"], shard, "transcript"))
            return {"asr": dict(meta["config"]["asr"]), "model": meta.get("model", {})}
    raise InputError(f"feature store {store}: its provenance names no transcript; rebuild it")


def _read_run_checkpoint(run: Path) -> dict[str, Any]:
    import pickle

    from emofusion.models.checkpoint import read_checkpoint

    path = run / "model.pt"
    if not path.is_file():
        raise InputError(
            f"{path} does not exist: {run} is not a trained run folder; train it first "
            f"(`{retrain(run)}`), or pass the run folder that has model.pt"
        )
    try:
        return read_checkpoint(path)
    except (ValueError, TypeError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise InputError(
            f"{path} is not a usable emofusion checkpoint ({type(e).__name__}: {e}); retrain the run (`{retrain(run)}`)"
        ) from None


def recipe_from_run(run: str | Path, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe of a trained and evaluated run folder (see the module docstring)."""
    from emofusion.features.backbones import backbone_class
    from emofusion.features.store import read_attrs
    from emofusion.fusion_data.windows import Windowing
    from emofusion.provenance import versions

    run = Path(run)
    ckpt = checkpoint if checkpoint is not None else _read_run_checkpoint(run)
    for name, hint in (
        ("run.json", f"train it first (`{retrain(run)}`)"),
        (
            "metrics.json",
            f"evaluate it first (`{reevaluate(run)}`): the smoothing windows come from its metrics.json",
        ),
    ):
        if not (run / name).is_file():
            raise InputError(f"{run / name} does not exist; {hint}")
    info = json.loads((run / "run.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    exp = info["config"]
    key = f"fusion.experiments.{info['experiment']}.training"
    # the frames per second the windows count (run.json of runs trained before it was recorded: none, so predict
    # gives such a model every clip's frames as they are, as it always did)
    windowing = replace(Windowing.from_training(exp["training"], key=key), rate=info.get("rate"))
    weights = dict(ckpt["extra"]["weights_sha256"])
    backbones: dict[str, Any] = {}
    stages: dict[str, Any] = {}
    for modality, recorded in sorted(info["stores"].items()):
        store = _locate(recorded, run, "feature store")
        attrs = read_attrs(store)
        name = attrs["backbone"]
        options = (attrs["provenance"].get("config") or {}).get("features", {})
        try:
            packages = list(backbone_class(modality, name).packages)
        except Exception:  # a backbone unknown here is reported when predict builds it
            packages = []
        backbones[modality] = {
            "name": name,
            "options": options.get(modality, {}).get("backbones", {}).get(name) or {},
            "batch_size": options.get("batch_size"),
            "amp": options.get("amp"),
            "weights_sha256": weights.get(modality, attrs["weights_sha256"]),
            "weights_source": attrs["weights_source"],
            "licence": attrs["licence"],
            "width": int(attrs["width"]),
            "packages": packages,
        }
        if modality == "visual":
            stages.update(_face_settings(store))
        elif modality == "audio":
            stages["audio"] = _audio_settings(store)
        else:
            asr = _asr_settings(store)
            stages["asr"], stages["asr_model"] = asr["asr"], asr["model"]
            stages.setdefault("audio", _audio_settings(store))
    smoothing = metrics.get("smoothing", {})
    return {
        "schema": RECIPE_SCHEMA,
        "experiment": info["experiment"],
        "model": info["model"],
        "fold": info["fold"],
        "seed": info["seed"],
        "modalities": sorted(info["stores"]),
        "experiment_config": exp,
        "windowing": asdict(windowing),
        "smoothing": {t: int(smoothing.get(t, 1)) for t in ("valence", "arousal")},
        "smoothing_chosen_on": smoothing.get("chosen_on"),
        "stages": stages,
        "backbones": backbones,
        "run_provenance": info.get("provenance", {}),
        "versions": versions(),
    }


def licences(recipe: dict[str, Any]) -> dict[str, str]:
    """The licence of every set of weights a model's inputs pass through."""
    out = {f"{m}/{b['name']}": b["licence"] for m, b in recipe["backbones"].items()}
    if "faces" in recipe["stages"]:
        out["faces/mtcnn"] = DETECTOR_LICENCE
    if "asr" in recipe["stages"]:
        out[f"asr/{recipe['stages']['asr'].get('model')}"] = ASR_LICENCE
    return out


def load_run(run: str | Path) -> Model:
    from emofusion.provenance import file_sha256

    run = Path(run)
    if not run.is_dir():
        raise InputError(
            f"--run {run} is not a folder; pass a training run folder (results/fusion/<experiment>/fold<k>/seed<s>)"
        )
    ckpt = _read_run_checkpoint(run)
    return Model(
        ckpt,
        recipe_from_run(run, ckpt),
        {"kind": "run", "path": str(run), "checkpoint_sha256": file_sha256(run / "model.pt")},
    )


# ------------------------------------------------------------------------------------------------------- bundles


BUNDLE_FOLDER = "model bundle (bundle.json, model.pt)"


def _is_bundle_tar(path: Path) -> bool:
    """A tar file holding only bundle members: one `emofusion export` wrote (its member list alone is read)."""
    try:
        with tarfile.open(path, "r:") as tar:
            names = tar.getnames()
    except (tarfile.TarError, OSError):
        return False
    return bool(names) and set(names) <= set(MEMBERS)


def check_export_out(out: str | Path) -> None:
    """Refuse an ``--out`` that would replace what `emofusion export` did not write, before anything is read: a
    folder may be replaced only when it holds nothing but bundle members, NAME.tar only when it is a bundle tar."""
    from emofusion.io import check_replaceable

    out = Path(out)
    if out.suffix != ".tar":
        check_replaceable(out, what=BUNDLE_FOLDER, owned=MEMBERS.__contains__)
        return
    hint = "choose another --out, or move it away"
    if out.is_dir():
        raise InputError(f"--out {out} is a folder, not a file: a name ending .tar is written as a tar file; {hint}")
    if (out.exists() or out.is_symlink()) and (out.is_symlink() or not _is_bundle_tar(out)):
        raise InputError(f"--out {out} exists and is not a bundle emofusion wrote, so it is not replaced; {hint}")


def export_bundle(run: str | Path, out: str | Path) -> dict[str, Any]:
    """Write a bundle of ``run`` to ``out`` (a ``.tar`` file, else a folder), atomically; return bundle.json.
    An ``out`` holding anything but an earlier bundle is refused first (:func:`check_export_out`)."""
    from emofusion.io import atomic_path

    check_export_out(out)
    model = load_run(run)
    out = Path(out)
    doc = {
        "bundle_schema": BUNDLE_SCHEMA,
        "name": model.name,
        "recipe": model.recipe,
        "licences": licences(model.recipe),
        "checkpoint_sha256": model.source["checkpoint_sha256"],
        "exported_from": str(run),
    }
    blob = json.dumps(doc, indent=2, sort_keys=True, default=str).encode()
    weights = (Path(run) / "model.pt").read_bytes()
    if hashlib.sha256(weights).hexdigest() != doc["checkpoint_sha256"]:  # retrained since load_run read it
        raise InputError(f"{run}/model.pt changed while it was exported; export again")
    if out.suffix == ".tar":
        with atomic_path(out) as tmp, tarfile.open(tmp, "w") as tar:
            for name, data in (("bundle.json", blob), ("model.pt", weights)):
                member = tarfile.TarInfo(name)
                member.size, member.mode, member.mtime = len(data), 0o644, 0  # same bytes for the same run
                tar.addfile(member, io.BytesIO(data))
    else:
        with atomic_path(out, directory=True, owned=MEMBERS.__contains__, what=BUNDLE_FOLDER) as tmp:
            (tmp / "bundle.json").write_bytes(blob)
            (tmp / "model.pt").write_bytes(weights)
    return doc


def load_bundle(path: str | Path) -> Model:
    """A bundle's model, refusing a newer schema; the checkpoint is read with ``weights_only=True``."""
    import hashlib
    import pickle

    import torch

    from emofusion.models.checkpoint import FORMAT, VERSION

    path = Path(path)
    if not path.exists():
        raise InputError(f"bundle {path} does not exist; write one with `emofusion export --run RUN --out {path}`")
    members = bundle_members(path)
    try:
        doc = json.loads(members["bundle.json"])
    except ValueError as e:
        raise InputError(f"bundle {path}: bundle.json is not JSON ({e}); export it again") from None
    except RecursionError:
        raise InputError(f"bundle {path}: bundle.json is nested too deeply to be a bundle's; export it again") from None
    if not isinstance(doc, dict):
        raise InputError(f"bundle {path}: bundle.json is {kind_of(doc)}, not an object; export it again")
    schema = doc.get("bundle_schema")
    if not isinstance(schema, int):
        raise InputError(f"bundle {path}: bundle.json has no bundle_schema; export it again")
    if schema > BUNDLE_SCHEMA:
        raise InputError(
            f"bundle {path} has bundle schema {schema}, newer than this emofusion reads (up to "
            f"{BUNDLE_SCHEMA}); upgrade emofusion to apply it"
        )
    recipe = check_recipe(doc.get("recipe"), f"bundle {path}")
    sha = hashlib.sha256(members["model.pt"]).hexdigest()
    if sha != doc.get("checkpoint_sha256"):
        raise InputError(
            f"bundle {path}: model.pt's sha256 {sha[:12]}… is not the "
            f"{str(doc.get('checkpoint_sha256'))[:12]}… bundle.json records; the bundle was altered or "
            "damaged, export it again"
        )
    try:
        ckpt = torch.load(io.BytesIO(members["model.pt"]), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise InputError(f"bundle {path}: model.pt cannot be loaded with weights_only=True ({e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or ckpt.get("version") != VERSION:
        raise InputError(f"bundle {path}: model.pt is not an emofusion checkpoint of version {VERSION}")
    return Model(
        ckpt,
        recipe,
        {
            "kind": "bundle",
            "path": str(path),
            "checkpoint_sha256": sha,
            "bundle_schema": schema,
            "exported_from": doc.get("exported_from"),
        },
    )


def load_model(*, run: str | Path | None = None, bundle: str | Path | None = None) -> Model:
    if (run is None) == (bundle is None):
        raise InputError("give exactly one of --run RUN_DIR and --model BUNDLE")
    if run is not None:
        return load_run(run)
    assert bundle is not None
    return load_bundle(bundle)
