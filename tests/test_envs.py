"""The conda environment mirrors the pip lock (conda itself is not installable here, so this is the check)."""

import sys
from pathlib import Path

import yaml

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


def test_every_rule_uses_a_real_env_file():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for line in smk.read_text().splitlines():
            if line.strip().startswith('"../../envs/'):
                assert (smk.parent / line.strip().strip('"')).resolve().is_file(), (smk, line)
