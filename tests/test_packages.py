"""Files and versions of installed distributions: found without importing them, errors name the key."""

import importlib.metadata

import pytest

from emofusion.errors import ConfigError
from emofusion.packages import installed_file, installed_version


def test_a_file_of_an_installed_wheel_and_its_version():
    path, version = installed_file("numpy", "numpy/__init__.py", key="k", missing="absent")
    assert path.is_file() and path.parent.name == "numpy"
    assert version == f"numpy=={importlib.metadata.version('numpy')}" == f"numpy=={installed_version('numpy')}"


def test_an_absent_distribution_or_file_is_a_config_error_naming_the_key():
    assert installed_version("no-such-distribution-emofusion") is None
    with pytest.raises(ConfigError, match="^features.x: install it$"):
        installed_file("no-such-distribution-emofusion", "a/b.pt", key="features.x", missing="features.x: install it")
    with pytest.raises(ConfigError, match=r"^features\.x: .*numpy/nothing\.pt is missing from the installed numpy"):
        installed_file("numpy", "numpy/nothing.pt", key="features.x", missing="absent")
