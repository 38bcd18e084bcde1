#!/usr/bin/env bash
# Bring up a single-node Slurm cluster on localhost for tests/test_slurm.py. Root only, Debian's Slurm 22.05.
#
#   munged + slurmctld + slurmd, each in the foreground under setsid (no systemd, no cgroups); the PIDs we start
#   are written to $ROOT/pids/ and stop_slurm.sh ends exactly those.
#
# Idempotent: installed packages, a working munged (ours or the machine's) and our running daemons are reused.
# No accounting database (AccountingStorageType=accounting_storage/none): `sacct` cannot work, so the test profile
# uses `slurm-status-command: squeue`, which the executor plugin trusts when MinJobAge >= 3 x its first status
# delay (MinJobAge=300 here, delay 1 s in the test profile); no MariaDB and slurmdbd to install, start and wait
# for. One stand-in GPU (a GRES whose device is /dev/null) lets jobs that ask for `--gpus=1` (the real profile's
# GPU rules) schedule here.
#
# Environment: EMOFUSION_SLURM_ROOT (state dir, default /var/tmp/emofusion-slurm), EMOFUSION_SLURM_WAIT (seconds
# per daemon, default 60). The partition is `emofusion`, as tests/slurm/profile/config.yaml says.
set -euo pipefail

ROOT="${EMOFUSION_SLURM_ROOT:-/var/tmp/emofusion-slurm}"
PARTITION=emofusion
WAIT="${EMOFUSION_SLURM_WAIT:-60}"
CONF="$ROOT/etc/slurm.conf" PIDS="$ROOT/pids" LOG="$ROOT/log"
export SLURM_CONF="$CONF"

say() { echo "[start_slurm] $*"; }
die() { echo "[start_slurm] ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# --- packages (the maintainer scripts must not start daemons through init scripts: policy-rc.d says no)
pkgs=(munge slurmctld slurmd slurm-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
mkdir -p "$ROOT" "$PIDS" "$LOG"
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} yourself"
  say "installing ${missing[*]}"
  made_policy=0
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1; }
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$LOG/apt.log" 2>&1 || { tail -20 "$LOG/apt.log" >&2; [ $made_policy = 0 ] || rm -f /usr/sbin/policy-rc.d; die "apt-get failed"; }
  [ $made_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
fi

# alive NAME COMM: the PID we saved for NAME still runs program COMM (guards against reused PIDs)
alive() { local f="$PIDS/$1.pid"; [ -s "$f" ] && [ "$(cat "/proc/$(cat "$f")/comm" 2>/dev/null)" = "$2" ]; }
launch() {  # launch NAME CMD...: start CMD detached, save its PID
  local name=$1; shift
  setsid "$@" >>"$LOG/$name.out" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  say "started $name (pid $!)"
}
wait_for() {  # wait_for WHAT CMD...: poll CMD until it succeeds or WAIT seconds pass
  local what=$1 end=$((SECONDS + WAIT)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { sinfo -R || :; tail -n 15 "$LOG"/*.out "$LOG"/*.log || :; die "timed out waiting for $what"; } >&2
    sleep 0.3
  done
}

# --- config: node geometry from slurmd -C, 90% of the memory so the node never registers as short of it
mkdir -p "$ROOT/etc" "$ROOT/spool/ctld" "$ROOT/spool/d"
chown slurm:slurm "$ROOT/spool/ctld" "$LOG"
chmod 755 "$ROOT" "$ROOT/etc" "$LOG"
node=$(/usr/sbin/slurmd -C | head -1 | sed 's/^NodeName=[^ ]*//; s/ UpTime=.*//')
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/" <<<"$node")
cat >"$CONF.new" <<EOF
# Written by tests/slurm/start_slurm.sh: a single-node test cluster.
ClusterName=emofusion-test
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$ROOT/slurmd.pid
StateSaveLocation=$ROOT/spool/ctld
SlurmdSpoolDir=$ROOT/spool/d
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
# Finished jobs stay visible to squeue this long: the plugin's squeue status checks need it.
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
NodeName=localhost$node Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
# A stand-in GPU: slurmd counts GPUs by their device files (a GPU without File= counts 0 and the node goes
# INVAL), so /dev/null plays the device. Jobs see CUDA_VISIBLE_DEVICES=0 and no GPU, and run on the CPU.
printf 'AutoDetect=off\nNodeName=localhost Name=gpu File=/dev/null\n' >"$ROOT/etc/gres.conf"
if cmp -s "$CONF.new" "$CONF"; then rm "$CONF.new"
elif alive slurmctld slurmctld || alive slurmd slurmd; then rm "$CONF.new"; die "config changed while running: stop_slurm.sh first"
else mv "$CONF.new" "$CONF"; fi
chmod 644 "$CONF" "$ROOT/etc/gres.conf"

# The plugin's job step strips SLURM_CONF, so srun inside a job reads /etc/slurm/slurm.conf: link ours there,
# unless that file exists and is someone else's.
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" != "$CONF" ]; then
  [ ! -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ] \
    || die "/etc/slurm/slurm.conf exists and is not ours; move it away to run this test cluster"
  mkdir -p /etc/slurm
  ln -s "$CONF" /etc/slurm/slurm.conf
  touch "$ROOT/made-etc-link"
fi

# --- munge: reuse a working munged, else start ours
if ! { munge -n | unmunge; } >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge; chown munge:munge /run/munge
  alive munged munged || launch munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
  wait_for munged bash -c 'munge -n | unmunge'
fi

# --- slurmctld (-c: start from an empty job state), then slurmd, then an idle node
if ! alive slurmctld slurmctld; then
  launch slurmctld /usr/sbin/slurmctld -D -c
  wait_for slurmctld bash -c 'scontrol ping | grep -q UP'
fi
alive slurmd slurmd || launch slurmd /usr/sbin/slurmd -D -N localhost
node_idle() {
  case "$(sinfo -h -N -n localhost -o %T)" in
    idle|mixed|allocated|completing) return 0 ;;
    down*|drain*) scontrol update nodename=localhost state=resume; return 1 ;;
    *) return 1 ;;
  esac
}
wait_for "node localhost" node_idle
say "up: partition $PARTITION, config $CONF (/etc/slurm/slurm.conf links to it)"
