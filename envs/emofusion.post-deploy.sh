#!/usr/bin/env bash
# Runs once inside the freshly created conda env, from the workflow's working directory (the checkout).
# The packages below declare dependencies that would replace the env's torch/numpy, so they go in with
# --no-deps; the project is installed editable so rules find `emofusion` (Snakemake removes PYTHONPATH).
set -euo pipefail
root="${EMOFUSION_ROOT:-$PWD}"
python -m pip install --no-deps -r "$root/requirements/nodeps.txt"
python -m pip install --no-deps -e "$root"
