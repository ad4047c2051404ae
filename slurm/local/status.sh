#!/usr/bin/env bash
# Is the one-node cluster up? Prints one line per part; exit 0 only when every part answers.
# Needs no root: it only asks the daemons (munge, slurmctld, slurmdbd through sinfo/sacct).
#
#   bash slurm/local/status.sh [-q]     # -q: print nothing, only the exit status
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

QUIET=0
[[ ${1:-} == -q ]] && QUIET=1
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
check slurmd alive "$STATE/run/slurmd.pid" slurmd
check "slurmdbd (sacct)" sacct_works
check "partition $PARTITION" bash -c "[[ \$(timeout 5 sinfo -h -p '$PARTITION' -o %a) == up ]]"
check "node usable (idle/mixed/allocated)" bash -c "timeout 5 sinfo -h -N -p '$PARTITION' -o %T | grep -qE '^(idle|mixed|allocated|completing)\$'"
((ok))
