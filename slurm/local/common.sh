# shellcheck shell=bash disable=SC2034  # sourced: the settings are used by the scripts
# Shared by start.sh, stop.sh and status.sh (sourced, not run): settings, logging, daemon checks.
# Every setting can be overridden from the environment; the defaults suit a CI machine.

STATE=${ROMA_SLURM_STATE:-/var/lib/roma-slurm}   # configs, spool, MariaDB data, logs, pid files
CLUSTER=${ROMA_SLURM_CLUSTER:-roma}
PARTITION=${ROMA_SLURM_PARTITION:-debug}
DB_PORT=${ROMA_SLURM_DB_PORT:-3307}             # MariaDB on 127.0.0.1 (3307: leave a system one alone)
CTLD_PORT=${ROMA_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${ROMA_SLURM_SLURMD_PORT:-6818}
DBD_PORT=${ROMA_SLURM_DBD_PORT:-6819}

MARKER=$STATE/.roma-slurm                       # proves a folder is ours before we link or wipe it
DB_RUN=$STATE/run/mysql
MUNGE_RUN=$STATE/run/munge
export SLURM_CONF=$STATE/etc/slurm.conf         # daemons and clients of this script use our config

log() { printf '[slurm-local %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

check_settings() {
    [[ $STATE =~ ^/[A-Za-z0-9_./-]+$ && $STATE != / ]] \
        || die "ROMA_SLURM_STATE must be an absolute path of [A-Za-z0-9_./-], got '$STATE'"
    local name
    for name in CLUSTER PARTITION; do
        [[ ${!name} =~ ^[a-z][a-z0-9_]*$ ]] || die "ROMA_SLURM_$name must match [a-z][a-z0-9_]*, got '${!name}'"
    done
    for name in DB_PORT CTLD_PORT SLURMD_PORT DBD_PORT; do
        [[ ${!name} =~ ^[0-9]+$ ]] || die "ROMA_SLURM_$name must be a port number, got '${!name}'"
    done
}

require_root() {
    [[ $EUID -eq 0 ]] || die "must run as root (try: sudo bash $0)"
}

# Serialise start/stop: two test sessions may try to start the cluster at once. Daemons are
# started with fd 9 closed (9>&-), or they would hold the lock for their whole life.
take_lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 300 9 || die "another start.sh/stop.sh holds $STATE/.lock"
}

# alive PIDFILE NAME: the pid file names a live process running program NAME (Debian's binaries
# are *-wlm behind alternatives links, so accept that suffix too).
alive() {
    local pidfile=$1 name=$2 pid comm
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name" || $comm == "$name-wlm" ]]
}

# wait_for SECONDS WHAT CMD...: poll CMD every 0.5 s until it succeeds.
wait_for() {
    local limit=$1 what=$2 end
    shift 2
    end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || return 1
        sleep 0.5
    done
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
db() { mariadb --no-defaults --socket="$DB_RUN/mysqld.sock" -u root "$@"; }
ctld_up() { timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }
dbd_up() { timeout 10 sacctmgr -n -P list cluster format=cluster; }
sacct_works() { timeout 10 sacct -n -X -S now-1minutes -o JobID; }
