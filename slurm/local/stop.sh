#!/usr/bin/env bash
# Stop the test cluster that slurm/local/start.sh started: cancel its jobs, then stop slurmd,
# slurmctld, slurmdbd, MariaDB and (only when start.sh started it) munged, each by its pid file.
# --nodes 2: the two-node cluster; also removes its network namespaces, veth roma-ctl and its
# tagged /etc/hosts lines (nothing else).
#
#   sudo bash slurm/local/stop.sh [--wipe] [--force] [--nodes 2]
#     --wipe   also delete the state folder (jobs, accounting, configs, logs) and the
#              /etc/slurm/slurm.conf link; job ids then restart at 1
#     --force  stop even while a test session uses the cluster (holds a shared flock on
#              $STATE/.users, see tests/conftest_slurm.py); without it stop.sh refuses
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

WIPE=0 FORCE=0
parse_nodes_arg "$@"
for arg in "${ARGS[@]}"; do
    case $arg in
        --wipe) WIPE=1 ;;
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown argument '$arg' (known: --wipe, --force, --nodes 1|2)" ;;
    esac
done
configure

# stop_daemon PIDFILE NAME: TERM, wait up to 30 s, then KILL.
stop_daemon() {
    local pidfile=$1 name=$2 pid
    alive "$pidfile" "$name" || return 0
    pid=$(<"$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 30 "$name to exit" bash -c "! kill -0 $pid"; then
        log "$name did not exit after SIGTERM: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# Cancel every job first so that no job step outlives slurmd.
cancel_jobs() {
    ctld_up || return 0
    local ids
    ids=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    [[ -n ${ids// } ]] || return 0
    log "cancelling jobs: $ids"
    # shellcheck disable=SC2086  # ids are numbers, one argument each
    timeout 10 scancel $ids 2>/dev/null || true
    wait_for 30 "jobs to end" bash -c '[[ -z $(squeue -h -o %A 2>/dev/null) ]]' \
        || log "jobs still listed after 30 s: $(squeue -h -o '%A %T' 2>&1 | tr '\n' ' ')"
}

# The two-node cluster's namespaces, veth and /etc/hosts lines (each only when present).
remove_network() {
    local n
    for n in "${MN_NODES[@]}" "$MN_HUB"; do
        if [[ -e /run/netns/$n ]]; then log "removing network namespace $n"; ip netns del "$n"; fi
    done
    # gone with roma-hub's end of the pair; deleted here in case that end was moved or missing
    if ip link show "$MN_CTL_LINK" >/dev/null 2>&1; then ip link del "$MN_CTL_LINK"; fi
    if grep -qF "$MN_HOSTS_TAG" /etc/hosts; then
        # rewritten in place (not replaced): /etc/hosts may be a bind mount in containers
        local kept
        kept=$(grep -vF " $MN_HOSTS_TAG" /etc/hosts || true)
        printf '%s\n' "$kept" >/etc/hosts
    fi
}

main() {
    require_root
    check_settings
    if [[ ! -e $MARKER ]]; then
        ((NODES_WANTED == 1)) || remove_network
        log "no cluster state in $STATE: nothing to stop"
        return 0
    fi
    take_lock
    # Held until exit: a session arriving meanwhile waits, then finds the cluster down.
    [[ -e $STATE/.users ]] && exec 8<"$STATE/.users"
    if [[ -e $STATE/.users ]] && ! flock -n -x 8; then
        ((FORCE)) || die "a test session is using the cluster (it holds $STATE/.users); --force stops it anyway"
        log "a test session is using the cluster: stopping anyway (--force)"
    fi
    cancel_jobs
    local f
    for f in "${SLURMD_PIDFILES[@]}"; do stop_daemon "$f" slurmd; done
    stop_daemon "$STATE/run/slurmctld.pid" slurmctld
    stop_daemon "$STATE/run/slurmdbd.pid" slurmdbd
    stop_daemon "$DB_RUN/mysqld.pid" mariadbd
    if alive "$OTHER_STATE/run/slurmctld.pid" slurmctld; then
        log "leaving munged running: the other test cluster ($OTHER_STATE) uses it"
    else
        stop_daemon "$MUNGE_RUN/munged.pid" munged
        # one the other cluster's start.sh started and left to us when it stopped first
        stop_daemon "$OTHER_STATE/run/munge/munged.pid" munged
    fi
    ((NODES_WANTED == 1)) || remove_network
    rm -f "$STATE/.started-by-tests"
    if ((WIPE)); then
        [[ $(readlink /etc/slurm/slurm.conf 2>/dev/null) == "$STATE/etc/slurm.conf" ]] && rm -f /etc/slurm/slurm.conf
        log "wiping $STATE"
        rm -rf --one-file-system "$STATE"
    fi
    log "stopped"
}

main
