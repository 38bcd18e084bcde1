#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv) idempotently.
# Fast when nothing changed: a stamp holds the hash of the lock files and pyproject.toml.
# Usage: scripts/setup.sh            (system packages via apt when missing, then the venv)
#        EMOFUSION_VENV=/path scripts/setup.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EMOFUSION_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

# System tools: ffmpeg (torchcodec's shared libraries, whisper's loader), espeak-ng (speech for tests).
need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${need_apt[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    log "missing system packages: ${need_apt[*]}; install them (e.g. sudo apt-get install ${need_apt[*]}) and rerun"
    exit 1
  fi
fi

"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  log "Python 3.11 is required (found $("$python" --version)); set PYTHON=/path/to/python3.11"; exit 1; }

stamp_want="$(cat "$root/requirements/lock.txt" "$root/requirements/nodeps.txt" "$root/pyproject.toml" \
  | sha256sum | cut -d' ' -f1)"
stamp_file="$venv/.emofusion-setup-stamp"
if [[ -x "$venv/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp_want" ]]; then
  log "environment up to date: $venv"
  exit 0
fi

[[ -x "$venv/bin/python" ]] || { log "creating $venv"; "$python" -m venv "$venv"; }
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install 'pip==25.3' 2>&1 | grep -v 'is ignored' >&2 || true
log "installing the locked stack (a few minutes on a fresh machine)"
# --no-deps: lock.txt is the complete set; nothing is re-resolved, so every machine gets the same versions.
"${pip[@]}" install --no-deps -r "$root/requirements/lock.txt" 2>&1 | grep -v 'is ignored' >&2 || true
"${pip[@]}" install --no-deps -r "$root/requirements/nodeps.txt" 2>&1 | grep -v 'is ignored' >&2 || true
"${pip[@]}" install --no-deps -e "$root" 2>&1 | grep -v 'is ignored' >&2 || true
# The greps above swallow pip's exit status: check the result explicitly instead.
"$venv/bin/python" -c 'import torch, torchaudio, torchcodec, facenet_pytorch, whisper, faster_whisper, h5py, snakemake, emofusion' \
  || { log "the environment in $venv is incomplete: see the pip output above"; exit 1; }
echo "$stamp_want" > "$stamp_file"
log "environment ready: $venv"
