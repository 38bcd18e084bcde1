"""The conda environment mirrors the pip lock (conda itself is not installable here, so this is the check), and
every rule of the workflow, as Snakemake itself loads it, runs its command in such an environment."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import DEMO, venv_env

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import sync_envs  # noqa: E402


def test_env_pins_equal_lock():
    env = yaml.safe_load((REPO / "envs" / "emofusion.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(sync_envs.lock_pins()), "run scripts/sync_envs.py after changing the lock"
    assert "python=3.11" in env["dependencies"]


def test_lock_is_exact():
    for pin in sync_envs.lock_pins():
        assert "==" in pin and not pin.startswith("-"), pin


def test_nodeps_packages_not_in_lock():
    nodeps = {ln.split("==")[0] for ln in sync_envs.lock_pins(REPO / "requirements" / "nodeps.txt")}
    assert {"facenet-pytorch", "openai-whisper", "fer", "PyEmotion", "Resemblyzer", "torchcrepe"} <= nodeps
    assert not nodeps & {p.split("==")[0] for p in sync_envs.lock_pins()}


def test_the_packages_no_deps_pins_are_requirements_nodeps():
    """The wheel carries the --no-deps pins (no requirements/ folder outside a checkout): the same as setup.sh's."""
    from emofusion.packages import NO_DEPS

    pins = dict(ln.split("==") for ln in sync_envs.lock_pins(REPO / "requirements" / "nodeps.txt"))
    assert pins == NO_DEPS


def test_the_wheels_dependencies_are_locked_packages():
    """What `pip install emofusion[...]` pulls is what the lock pins (and none of the --no-deps wheels, which
    would pull another torch or TensorFlow)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [*project["dependencies"], *(d for ds in project["optional-dependencies"].values() for d in ds)]
    locked = {p.split("==")[0].lower() for p in sync_envs.lock_pins()}
    for name in names:
        bare = name.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        assert bare in locked or bare == "emofusion", name


# Loads the workflow with Snakemake's API (as `snakemake` does, rules made in loops included) and prints, per rule,
# what it runs and in which conda env; a subprocess, since loading a workflow changes the working directory.
_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.enums import Quietness
from snakemake.settings.types import (ConfigSettings, DeploymentSettings, OutputSettings, ResourceSettings,
                                      StorageSettings, WorkflowSettings)

with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(), config_settings=ConfigSettings(config=json.loads(sys.argv[3])),
        storage_settings=StorageSettings(), workflow_settings=WorkflowSettings(),
        deployment_settings=DeploymentSettings(), snakefile=Path(sys.argv[1]), workdir=Path(sys.argv[2]),
    )._workflow
    print(json.dumps({
        rule.name: {
            "command": bool(rule.shellcmd or rule.script or rule.notebook or rule.wrapper),
            "run": rule.is_run,
            "conda": None if rule.conda_env is None else str(Path(rule.snakefile).parent / str(rule.conda_env)),
            "outputs": len(rule.output),
        }
        for rule in workflow.rules
    }))
"""


def workflow_rules(workdir: Path, **config) -> dict[str, dict]:
    """Every rule of the repository's workflow, loaded by Snakemake in ``workdir`` on the demo corpus."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _RULES,
            str(REPO / "Snakefile"),
            str(workdir),
            json.dumps({"corpus": {"root": str(DEMO)}, **config}),
        ],
        capture_output=True,
        text=True,
        env=venv_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    "config",
    [{}, {"clips_per_face_job": 3, "clips_per_embed_job": 3, "clips_per_audio_job": 3}],
    ids=["a job per clip", "shards"],
)
def test_every_rule_runs_its_command_in_a_conda_env_with_the_lock_pins(workdir, config):
    """Each rule that runs something has `conda:` naming an env file that exists, whose pins are the lock's, with
    the post-deploy script that installs the --no-deps packages and the project; no rule has a `run:` block (it
    would ignore the env). The rules without a command are targets (no outputs)."""
    rules = workflow_rules(workdir, **config)
    shards = {name for name in rules if "_shard" in name}
    assert bool(shards) == bool(config), sorted(rules)  # the shard rules are made only when asked for
    if config:
        assert {"faces_shard0", "audio_shard0", "transcribe_shard0", "embed_visual_shard0"} <= shards
    lock = sorted(sync_envs.lock_pins())
    runners = {name: rule for name, rule in rules.items() if rule["command"] or rule["run"]}
    assert len(runners) >= 10, sorted(rules)
    for name, rule in rules.items():
        assert not rule["run"], f"rule {name} has a run: block; call an emofusion command with shell: instead"
        if name not in runners:
            assert rule["outputs"] == 0 and rule["conda"] is None, f"rule {name} runs nothing but has outputs"
            continue
        assert rule["conda"], f"rule {name} has no conda: env"
        env_file = Path(rule["conda"]).resolve()
        assert env_file.is_file(), f"rule {name}: its conda env {env_file} does not exist"
        env = yaml.safe_load(env_file.read_text())
        assert isinstance(env, dict) and "dependencies" in env, f"rule {name}: {env_file} is not a conda env file"
        pip = next((d["pip"] for d in env["dependencies"] if isinstance(d, dict)), [])
        assert sorted(pip) == lock, f"{env_file}: pins differ from the lock; run scripts/sync_envs.py"
        assert "python=3.11" in env["dependencies"], env_file
        assert env_file.with_suffix(".post-deploy.sh").is_file(), f"{env_file}: no post-deploy script beside it"


def test_the_post_deploy_script_installs_the_nodeps_packages_and_the_project(tmp_path):
    """Snakemake drops PYTHONPATH in conda jobs and the --no-deps packages are not in the env's pip list: the
    script, run as Snakemake runs it (from the working directory, the env's python first on PATH), installs both."""
    bin_dir = tmp_path / "env" / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "python").chmod(0o755)
    env = {**venv_env(), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    env.pop("EMOFUSION_ROOT", None)
    subprocess.run(["bash", str(REPO / "envs" / "emofusion.post-deploy.sh")], cwd=REPO, env=env, check=True)
    assert calls.read_text().splitlines() == [
        f"-m pip install --no-deps -r {REPO}/requirements/nodeps.txt",
        f"-m pip install --no-deps -e {REPO}",
    ]
