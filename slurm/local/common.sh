# shellcheck shell=bash disable=SC2034  # sourced: the settings are used by the scripts
# Shared by start.sh, stop.sh and status.sh (sourced, not run): settings, logging, daemon checks.
# Every setting can be overridden from the environment; the defaults suit a CI machine.
#
# Two clusters, chosen with --nodes (parse_nodes_arg; configure sets everything else):
#   --nodes 1 (default)  the one-node cluster: this machine is the node, /var/lib/roma-slurm
#   --nodes 2            the two-node cluster: slurmd roma-n1 and roma-n2, each in its own network
#                        namespace (own address and hostname), /var/lib/roma-slurm-multinode, its own
#                        ports and MariaDB, so both clusters can run side by side. They share munged
#                        (SLURM 22.05's clients reach slurmdbd only through munge's default socket):
#                        stop.sh stops it only when the other cluster's slurmctld is not running.

NODES_WANTED=1

# Remove --nodes N / --nodes=N from the arguments: sets NODES_WANTED, leaves the rest in ARGS.
parse_nodes_arg() {
    ARGS=()
    while (($#)); do
        case $1 in
            --nodes) (($# >= 2)) || die "--nodes needs a value (1 or 2)"; NODES_WANTED=$2; shift 2 ;;
            --nodes=*) NODES_WANTED=${1#--nodes=}; shift ;;
            *) ARGS+=("$1"); shift ;;
        esac
    done
    [[ $NODES_WANTED == 1 || $NODES_WANTED == 2 ]] || die "--nodes must be 1 or 2, got '$NODES_WANTED'"
}

# Network of the two-node cluster: addresses that exist only on the veth pairs start.sh creates
# (a bridge in namespace roma-hub; slurmctld, in the machine's namespace, on veth roma-ctl).
MN_NET=10.213.77
MN_CTL_ADDR=$MN_NET.1
MN_NODES=(roma-n1 roma-n2)          # node name = hostname = network namespace name
MN_ADDRS=("$MN_NET.11" "$MN_NET.12")
MN_HUB=roma-hub                     # network namespace holding the bridge
MN_BRIDGE=roma-br
MN_CTL_LINK=roma-ctl                # veth end in the machine's namespace (slurmctld, clients)
MN_HOSTS_TAG="# roma-slurm-multinode"  # /etc/hosts lines start.sh adds end with this; stop.sh removes exactly them

configure() {
    if ((NODES_WANTED == 1)); then
        STATE=${ROMA_SLURM_STATE:-/var/lib/roma-slurm}   # configs, spool, MariaDB data, logs, pid files
        CLUSTER=${ROMA_SLURM_CLUSTER:-roma}
        PARTITION=${ROMA_SLURM_PARTITION:-debug}
        DB_PORT=${ROMA_SLURM_DB_PORT:-3307}             # MariaDB on 127.0.0.1 (3307: leave a system one alone)
        CTLD_PORT=${ROMA_SLURM_CTLD_PORT:-6817}
        SLURMD_PORT=${ROMA_SLURM_SLURMD_PORT:-6818}
        DBD_PORT=${ROMA_SLURM_DBD_PORT:-6819}
        SLURMD_PIDFILES=("$STATE/run/slurmd.pid")
        OTHER_STATE=${ROMA_SLURM_MN_STATE:-/var/lib/roma-slurm-multinode}
    else
        STATE=${ROMA_SLURM_MN_STATE:-/var/lib/roma-slurm-multinode}
        CLUSTER=romamn
        PARTITION=${ROMA_SLURM_PARTITION:-debug}
        DB_PORT=3308
        CTLD_PORT=6827
        SLURMD_PORT=6828                                # each node in its own namespace: same port
        DBD_PORT=6829
        OTHER_STATE=${ROMA_SLURM_STATE:-/var/lib/roma-slurm}
        local n
        SLURMD_PIDFILES=()
        for n in "${MN_NODES[@]}"; do SLURMD_PIDFILES+=("$STATE/run/slurmd-$n.pid"); done
    fi
    MARKER=$STATE/.roma-slurm                       # proves a folder is ours before we link or wipe it
    DB_RUN=$STATE/run/mysql
    MUNGE_RUN=$STATE/run/munge
    export SLURM_CONF=$STATE/etc/slurm.conf         # daemons and clients of this script use our config
}

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
slurmds_alive() {  # every slurmd of this cluster runs
    local f
    for f in "${SLURMD_PIDFILES[@]}"; do alive "$f" slurmd || return 1; done
}
nodes_usable() {  # every node of the partition is idle/mixed/allocated
    local states
    states=$(timeout 5 sinfo -h -N -p "$PARTITION" -o %T 2>/dev/null) || return 1
    [[ -n $states ]] && ! grep -qvE '^(idle|mixed|allocated|completing)$' <<<"$states"
}
