#!/usr/bin/env bash
# Stop the daemons tests/slurm/start_slurm.sh started, and nothing else: each PID it saved, if that PID still runs
# the expected program. Jobs still queued are cancelled first so no job step outlives slurmd. Removes
# /etc/slurm/slurm.conf only if start_slurm.sh made that link.
#
#   stop_slurm.sh           stop; keep $ROOT (config, logs) for a look or a quick restart
#   stop_slurm.sh --purge   stop and delete $ROOT
set -uo pipefail

ROOT="${EMOFUSION_SLURM_ROOT:-/var/tmp/emofusion-slurm}"
PIDS="$ROOT/pids"
export SLURM_CONF="$ROOT/etc/slurm.conf"

pid_of() { local f="$PIDS/$1.pid"; [ -s "$f" ] && [ "$(cat "/proc/$(cat "$f")/comm" 2>/dev/null)" = "$2" ] && cat "$f"; }

stop() {  # stop NAME COMM: SIGTERM, wait up to 15 s, then SIGKILL that one PID
  local pid i
  if pid=$(pid_of "$1" "$2"); then
    kill -TERM "$pid"
    for i in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.3; done
    [ ! -d "/proc/$pid" ] || { echo "[stop_slurm] $1 ignored SIGTERM; SIGKILL"; kill -KILL "$pid"; }
    echo "[stop_slurm] stopped $1 (pid $pid)"
  fi
  rm -f "$PIDS/$1.pid"
}

if pid_of slurmctld slurmctld >/dev/null; then
  jobs=$(squeue -h -t PD,R,CG -o %i 2>/dev/null)
  if [ -n "$jobs" ]; then
    echo "[stop_slurm] cancelling jobs:" $jobs
    scancel $jobs
    for _ in $(seq 30); do [ -z "$(squeue -h -t PD,R,CG -o %i 2>/dev/null)" ] && break; sleep 0.3; done
  fi
fi
stop slurmd slurmd
stop slurmctld slurmctld
stop munged munged

if [ -e "$ROOT/made-etc-link" ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$ROOT/etc/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf "$ROOT/made-etc-link"
  echo "[stop_slurm] removed the /etc/slurm/slurm.conf link"
fi
[ "${1:-}" != "--purge" ] || { rm -rf "$ROOT"; echo "[stop_slurm] removed $ROOT"; }
exit 0
