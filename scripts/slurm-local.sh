#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the tests and for trying the sbatch
# templates: installs Slurm and munge (Debian/Ubuntu packages), writes a minimal slurm.conf
# for one node named `localhost` with this machine's CPUs and memory (from `slurmd -C`), and
# starts munged, slurmctld and slurmd directly (no systemd: works inside containers).
#
#   scripts/slurm-local.sh          # install if needed, start (or keep) the cluster, wait idle
#   scripts/slurm-local.sh restart  # stop, rewrite the config, start again
#   scripts/slurm-local.sh stop     # stop the daemons started here
#   scripts/slurm-local.sh status   # sinfo, or exit 1 when the cluster is not up
#
# Idempotent: a second `start` with the cluster up and the same config does nothing. Must run
# as root (slurmd runs jobs as their submitting user). Everything lives under $SLURM_LOCAL_DIR
# (default /var/spool/mixatlas-slurm): state, logs, pid files; the config is /etc/slurm/slurm.conf.
set -euo pipefail

CMD="${1:-start}"
DIR="${SLURM_LOCAL_DIR:-/var/spool/mixatlas-slurm}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
NODE=localhost

log() { printf 'slurm-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (slurmd must be able to start jobs as their users)"

install_packages() {
  local need=()
  command -v slurmctld >/dev/null 2>&1 || need+=(slurmctld)
  command -v slurmd >/dev/null 2>&1 || need+=(slurmd)
  command -v sbatch >/dev/null 2>&1 || need+=(slurm-client)
  command -v munged >/dev/null 2>&1 || need+=(munge)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /etc/munge
  install -d -o munge -g munge -m 0711 /var/lib/munge
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating a munge key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0
  fi
  log "starting munged"
  rm -f /run/munge/munge.socket.2 /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "munged did not come up (see /var/log/munge/munged.log)"
}

# The plugins this Slurm build has (mpi_pmix is optional).
has_plugin() {
  local f
  for f in /usr/lib/*/slurm-wlm/"$1".so /usr/lib/slurm/"$1".so /usr/lib64/slurm/"$1".so; do
    [ -e "$f" ] && return 0
  done
  return 1
}

write_conf() {
  local hw cpus mem mpi topo
  # `slurmd -C` prints this machine's line: NodeName=… CPUs=… Boards=… SocketsPerBoard=…
  # CoresPerSocket=… ThreadsPerCore=… RealMemory=…; keep all but the name.
  hw="$(slurmd -C | head -1)"
  cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
  mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
  [ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs and memory from 'slurmd -C': $hw"
  topo="$(tr ' ' '\n' <<<"$hw" | grep -E '^(Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')"
  mpi=none
  has_plugin mpi_pmix && mpi=pmix
  install -d -m 0755 "$CONF_DIR" "$DIR" "$DIR/ctld" "$DIR/d" "$DIR/log"
  cat >"$CONF.new" <<EOF
# Written by scripts/slurm-local.sh: a single-node test cluster (MixAtlas).
ClusterName=mixatlas-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds (default 120) before it may start again; short here.
AuthInfo=cred_expire=10
CryptoType=crypto/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# No cgroups in containers: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
MpiDefault=$mpi
# No accounting daemon: squeue/scontrol only (sacct reports nothing).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
# Quick turnaround for tests: finished jobs stay visible 5 min, requeued jobs start again soon.
MinJobAge=300
KillWait=10
InactiveLimit=0
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=60
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus ${topo}RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new"; then
    rm -f "$CONF.new"
    return 1 # unchanged
  fi
  mv "$CONF.new" "$CONF"
  log "wrote $CONF ($cpus CPUs, $mem MB, MpiDefault=$mpi)"
  return 0
}

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -1; }

wait_idle() {
  local state=""
  for _ in $(seq 120); do
    state="$(node_state || true)"
    case "$state" in
      idle|idle\*|mixed|allocated|completing) return 0 ;;
      down*|drain*)
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  die "node $NODE not idle after 60 s (state: ${state:-none}); see $DIR/log/"
}

stop() {
  local f
  for f in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
    if pid_alive "$f"; then
      local pid
      pid="$(cat "$f")"
      log "stopping $(basename "$f" .pid) ($pid)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

start() {
  install_packages
  start_munge
  local changed=0
  write_conf && changed=1
  if [ "$changed" = 1 ]; then stop; fi
  if ! pid_alive "$DIR/slurmctld.pid"; then
    log "starting slurmctld"
    # -c: clear old state (jobs of an earlier run); -i: ignore state errors.
    slurmctld -c -i
  fi
  if ! pid_alive "$DIR/slurmd.pid"; then
    log "starting slurmd"
    slurmd -N "$NODE"
  fi
  wait_idle
  log "up: $(sinfo -h -o '%P %a %D %T %C' | head -1) (partition avail nodes state CPUs A/I/O/T)"
}

case "$CMD" in
  start) start ;;
  restart) install_packages; stop; write_conf || true; start ;;
  stop) stop ;;
  status) sinfo && pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid" ;;
  *) die "usage: $0 [start|restart|stop|status]" ;;
esac
