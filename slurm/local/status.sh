#!/usr/bin/env bash
# Is the test cluster up? Prints one line per part; exit 0 only when every part answers.
# Needs no root: it only asks the daemons (munge, slurmctld, slurmdbd through sinfo/sacct).
#
#   bash slurm/local/status.sh [-q] [--nodes 2]   # -q: print nothing, only the exit status;
#                                                 # --nodes 2: the two-node cluster
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

QUIET=0
parse_nodes_arg "$@"
for arg in "${ARGS[@]}"; do
    case $arg in
        -q) QUIET=1 ;;
        *) die "unknown argument '$arg' (known: -q, --nodes 1|2)" ;;
    esac
done
configure
ok=1
check() {  # check WHAT CMD...
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then
        ((QUIET)) || echo "up      $what"
    else
        ((QUIET)) && exit 1  # -q: the first part down answers the question
        echo "DOWN    $what"
        ok=0
    fi
}

[[ -r $SLURM_CONF ]] || { ((QUIET)) || echo "no cluster config at $SLURM_CONF"; exit 1; }
check munge munge_works
check slurmctld ctld_up
for pidfile in "${SLURMD_PIDFILES[@]}"; do
    check "slurmd ($(basename "$pidfile" .pid))" alive "$pidfile" slurmd
done
check "slurmdbd (sacct)" sacct_works
check "partition $PARTITION" bash -c "[[ \$(timeout 5 sinfo -h -p '$PARTITION' -o %a) == up ]]"
check "every node usable (idle/mixed/allocated)" nodes_usable
((ok))
