#!/usr/bin/env bash
# Install (when missing) and start a one-node SLURM 22.05 cluster with accounting, on this Debian
# machine, as root, without systemd: munged, MariaDB, slurmdbd, slurmctld, slurmd as plain daemons.
#
#   sudo bash slurm/local/start.sh [--smoke] [--nodes 2]
#     --smoke    also run one job (on every node) and wait for COMPLETED
#     --nodes 2  the two-node cluster instead: slurmd roma-n1 and roma-n2, each in its own network
#                namespace with its own address (10.213.77.11/.12, on a bridge in namespace
#                roma-hub) and hostname; state in /var/lib/roma-slurm-multinode; clients need
#                SLURM_CONF=<state>/etc/slurm.conf (the one-node cluster keeps /etc/slurm/slurm.conf)
#
# Idempotent: every part is checked on its own and only what is missing or dead is (re)started, so
# re-running on a healthy cluster only verifies that sinfo and sacct answer (about a second).
# Everything lives under $ROMA_SLURM_STATE (default /var/lib/roma-slurm): etc/ (rendered configs),
# log/, run/ (pid files), spool/, mysql/. /etc/slurm/slurm.conf is linked to etc/slurm.conf so that
# sbatch/sacct/submitit find the cluster without SLURM_CONF. Facts for tests: $STATE/cluster.env.
# Stop with slurm/local/stop.sh (--wipe also deletes the state: job ids then restart at 1).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

SMOKE=0
parse_nodes_arg "$@"
for arg in "${ARGS[@]}"; do
    case $arg in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) die "unknown argument '$arg' (known: --smoke, --nodes 1|2)" ;;
    esac
done
configure

PACKAGES=(slurmctld slurmd slurm-client slurmdbd slurm-wlm-mysql-plugin munge mariadb-server iproute2 util-linux)
CTLD_HOST=$(hostname -s)
if ((NODES_WANTED == 1)); then
    NODES=("$CTLD_HOST") ADDRS=(127.0.0.1) CTLD_ADDR=127.0.0.1 SHARE=1
else
    NODES=("${MN_NODES[@]}") ADDRS=("${MN_ADDRS[@]}") CTLD_ADDR=$MN_CTL_ADDR SHARE=${#MN_NODES[@]}
fi
NODE=${NODES[0]}
# Per node: the machine's CPUs and 90% of its memory, shared out among the nodes (a RealMemory
# above what slurmd sees would drain the node).
CPUS=${ROMA_SLURM_CPUS:-$(( $(nproc) / SHARE > 0 ? $(nproc) / SHARE : 1 ))}
MEM_MB=${ROMA_SLURM_MEM_MB:-$(awk -v share="$SHARE" '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9 / share}' /proc/meminfo)}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get (start.sh targets Debian 12)"
    log "installing ${missing[*]} with apt (about a minute)"
    # Keep the packages' own init scripts from starting daemons with default configs.
    local guard=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1
    fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"; } >>"$STATE/log/apt.log" 2>&1 || rc=$?
    ((guard)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get failed (exit $rc); see $STATE/log/apt.log"
}

node_lines() {  # the NodeName and PartitionName lines of slurm.conf
    local i
    for i in "${!NODES[@]}"; do
        printf 'NodeName=%s NodeAddr=%s CPUs=%s RealMemory=%s State=UNKNOWN\n' "${NODES[i]}" "${ADDRS[i]}" "$CPUS" "$MEM_MB"
    done
    printf 'PartitionName=%s Nodes=%s Default=YES MaxTime=INFINITE State=UP\n' "$PARTITION" "$(IFS=,; echo "${NODES[*]}")"
}

# render TEMPLATE: fill the @KEY@ fields of a config template.
render() {
    local per_node=""
    if ((NODES_WANTED > 1)); then
        per_node=-%n  # slurmd replaces %n by its node name: one pid file, log and spool per node
    fi
    local line
    sed -e "s|@STATE@|$STATE|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@PARTITION@|$PARTITION|g" \
        -e "s|@CTLD_HOST@|$CTLD_HOST|g" -e "s|@CTLD_ADDR@|$CTLD_ADDR|g" -e "s|@PER_NODE@|$per_node|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" \
        -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" "$1" |
    while IFS= read -r line; do
        case $line in
            @NODE_LINES@) node_lines ;;
            *) printf '%s\n' "$line" ;;
        esac
    done
}

# stdin -> DEST (mode MODE) atomically; succeeds only when the content changed.
write_if_changed() {
    local dest=$1 mode=$2 tmp
    tmp=$(mktemp "$dest.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if cmp -s "$tmp" "$dest"; then rm -f "$tmp"; return 1; fi
    mv -f "$tmp" "$dest"
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM, then KILL after 20 s
    alive "$1" "$2" || return 0
    local pid
    pid=$(<"$1")
    kill -TERM "$pid" 2>/dev/null || true
    wait_for 20 "$2 to exit" bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
}

make_layout() {  # before install_packages, which logs to log/apt.log
    install -d -m 0755 "$STATE" "$STATE/etc" "$STATE/log" "$STATE/run" "$STATE/spool" "$STATE/spool/slurmctld"
    if ((NODES_WANTED == 1)); then
        install -d -m 0755 "$STATE/spool/slurmd"
    else
        local n
        for n in "${NODES[@]}"; do install -d -m 0755 "$STATE/spool/slurmd-$n"; done
    fi
    touch "$MARKER"
    # Test sessions hold a shared flock on .users while they use the cluster; stop.sh checks it.
    [[ -e $STATE/.users ]] || install -m 0644 /dev/null "$STATE/.users"
}

make_daemon_dirs() {  # after install_packages: the munge and mysql users come with the packages
    # daemons that drop privileges need their own writable run folder and log file
    install -d -o munge -g munge -m 0700 "$MUNGE_RUN"
    install -d -o mysql -g mysql -m 0755 "$DB_RUN"
    install -d -o mysql -g mysql -m 0750 "$STATE/mysql"
    local f
    for f in munged:munge mariadb:mysql; do
        [[ -e $STATE/log/${f%%:*}.log ]] || install -o "${f#*:}" -g "${f#*:}" -m 0640 /dev/null "$STATE/log/${f%%:*}.log"
    done
}

start_munge() {
    munge_works && return 0   # ours, the other test cluster's, or one the machine already runs
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    stop_pid "$MUNGE_RUN/munged.pid" munged   # alive but not answering: restart it
    log "starting munged"
    # --force: take over a socket left behind by a munged that died
    runuser -u munge -- /usr/sbin/munged --force --pid-file="$MUNGE_RUN/munged.pid" \
        --log-file="$STATE/log/munged.log" 9>&-
    wait_for 15 munge munge_works || die "munged does not answer; see $STATE/log/munged.log"
}

start_mariadb() {
    if [[ ! -d $STATE/mysql/mysql ]]; then
        log "initialising MariaDB in $STATE/mysql"
        mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" --skip-test-db \
            --auth-root-authentication-method=socket >>"$STATE/log/mariadb-init.log" 2>&1 \
            || die "mariadb-install-db failed; see $STATE/log/mariadb-init.log"
    fi
    if ! alive "$DB_RUN/mysqld.pid" mariadbd; then
        log "starting MariaDB on 127.0.0.1:$DB_PORT"
        setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" \
            --socket="$DB_RUN/mysqld.sock" --pid-file="$DB_RUN/mysqld.pid" \
            --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
            --log-error="$STATE/log/mariadb.log" --innodb-buffer-pool-size=128M \
            </dev/null >>"$STATE/log/mariadb.log" 2>&1 9>&- &
    fi
    wait_for 60 MariaDB db -e 'SELECT 1' || die "MariaDB does not answer; see $STATE/log/mariadb.log"
    # The password is hex from /dev/urandom, so it is safe inside the SQL text.
    db <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

# -> CONF_CHANGED / DBD_CONF_CHANGED = 1 when a rendered config differs from the running one.
write_configs() {
    CONF_CHANGED=0 DBD_CONF_CHANGED=0
    render "$HERE/slurm.conf.in" | write_if_changed "$STATE/etc/slurm.conf" 0644 && CONF_CHANGED=1
    render "$HERE/slurmdbd.conf.in" | write_if_changed "$STATE/etc/slurmdbd.conf" 0600 && DBD_CONF_CHANGED=1
    write_facts
    ((NODES_WANTED == 1)) || return 0  # the two-node cluster's clients set SLURM_CONF
    # Clients find the cluster through the standard path.
    local link=/etc/slurm/slurm.conf target=$STATE/etc/slurm.conf
    mkdir -p /etc/slurm
    if [[ -L $link ]]; then
        local old
        old=$(readlink "$link")
        if [[ $old != "$target" ]]; then
            [[ ! -e $old || -e $(dirname "$(dirname "$old")")/.roma-slurm ]] \
                || die "$link points to $old, which is not a roma-slurm state folder; move it away first"
            ln -sfn "$target" "$link"
        fi
    elif [[ -e $link ]]; then
        die "$link exists and is not ours; move it away first (start.sh links it to $target)"
    else
        ln -s "$target" "$link"
    fi
}

write_facts() {  # $STATE/cluster.env, read by tests/conftest_slurm.py
    {
        printf 'CLUSTER=%s\nPARTITION=%s\nNODE=%s\nCPUS=%s\nMEM_MB=%s\n' "$CLUSTER" "$PARTITION" "$NODE" "$CPUS" "$MEM_MB"
        printf 'STATE=%s\nSLURM_CONF=%s\n' "$STATE" "$SLURM_CONF"
        printf 'NODES=%s\nADDRS=%s\n' "$(IFS=,; echo "${NODES[*]}")" "$(IFS=,; echo "${ADDRS[*]}")"
    } | write_if_changed "$STATE/cluster.env" 0644 || true
}

start_slurmdbd() {
    ((DBD_CONF_CHANGED)) && stop_pid "$STATE/run/slurmdbd.pid" slurmdbd
    if ! alive "$STATE/run/slurmdbd.pid" slurmdbd; then
        log "starting slurmdbd"
        /usr/sbin/slurmdbd >>"$STATE/log/slurmdbd.out" 2>&1 9>&- || die "slurmdbd failed; see $STATE/log/slurmdbd.log"
    fi
    wait_for 60 slurmdbd dbd_up || die "slurmdbd does not answer; see $STATE/log/slurmdbd.log"
    if ! dbd_up | grep -qx "$CLUSTER"; then
        log "adding cluster $CLUSTER to accounting"
        timeout 20 sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

node_ready() {  # node_ready NODE: idle/mixed/allocated; resumes a node left drained or down earlier
    local state
    state=$(timeout 5 sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n1)
    case $state in
        idle|mixed|allocated|completing) return 0 ;;
        drain*|down*) timeout 5 scontrol update nodename="$1" state=resume >/dev/null 2>&1 || true ;;
    esac
    return 1
}

# ---- the two-node cluster's network: every part is checked and only what is missing is made.
netns_add() { [[ -e /run/netns/$1 ]] || ip netns add "$1"; }
link_in() { ip -n "$1" link show "$2" >/dev/null 2>&1; }  # link_in NETNS LINK

setup_network() {
    netns_add "$MN_HUB"
    link_in "$MN_HUB" "$MN_BRIDGE" || ip -n "$MN_HUB" link add "$MN_BRIDGE" type bridge
    ip -n "$MN_HUB" link set lo up
    ip -n "$MN_HUB" link set "$MN_BRIDGE" up
    # slurmctld and the clients (sbatch, sacct) stay in this machine's namespace, on veth roma-ctl
    if ! ip link show "$MN_CTL_LINK" >/dev/null 2>&1; then
        link_in "$MN_HUB" ctl && ip -n "$MN_HUB" link del ctl
        ip link add "$MN_CTL_LINK" type veth peer name ctl netns "$MN_HUB"
    fi
    ip addr replace "$MN_CTL_ADDR/24" dev "$MN_CTL_LINK"
    ip link set "$MN_CTL_LINK" up
    ip -n "$MN_HUB" link set ctl master "$MN_BRIDGE" up
    local i n
    for i in "${!NODES[@]}"; do
        n=${NODES[i]}
        netns_add "$n"
        ip -n "$n" link set lo up
        if ! link_in "$n" eth0; then
            link_in "$MN_HUB" "$n" && ip -n "$MN_HUB" link del "$n"
            ip -n "$MN_HUB" link add "$n" type veth peer name eth0 netns "$n"
        fi
        ip -n "$n" addr replace "${ADDRS[i]}/24" dev eth0
        ip -n "$n" link set eth0 up
        ip -n "$MN_HUB" link set "$n" master "$MN_BRIDGE" up
    done
    # Node names resolve on every node (MASTER_ADDR is the first node's hostname): tagged lines,
    # which stop.sh removes and nothing else.
    for i in "${!NODES[@]}"; do
        grep -qxF "${ADDRS[i]} ${NODES[i]} $MN_HOSTS_TAG" /etc/hosts \
            || printf '%s %s %s\n' "${ADDRS[i]}" "${NODES[i]}" "$MN_HOSTS_TAG" >>/etc/hosts
    done
}

# start_slurmd NODE PIDFILE: slurmd in the node's own network namespace, with the node's hostname
# (a UTS namespace of its own), so that the node's jobs see their own address and hostname.
start_slurmd() {
    local node=$1 pidfile=$2
    alive "$pidfile" slurmd && return 0
    if ((NODES_WANTED == 1)); then
        log "starting slurmd (node $node: $CPUS CPUs, $MEM_MB MB)"
        /usr/sbin/slurmd >>"$STATE/log/slurmd.out" 2>&1 9>&- || die "slurmd failed; see $STATE/log/slurmd.log"
        return 0
    fi
    log "starting slurmd $node in its network namespace ($CPUS CPUs, $MEM_MB MB)"
    # shellcheck disable=SC2016  # $1 is expanded by the inner bash
    nsenter --net="/run/netns/$node" unshare --uts -- bash -c 'hostname "$1" && exec /usr/sbin/slurmd -N "$1"' \
        slurmd-start "$node" >>"$STATE/log/slurmd-$node.out" 2>&1 9>&- \
        || die "slurmd $node failed; see $STATE/log/slurmd-$node.log"
}

start_slurm() {
    local i
    if ((CONF_CHANGED)); then  # a changed slurm.conf needs fresh daemons
        for i in "${!SLURMD_PIDFILES[@]}"; do stop_pid "${SLURMD_PIDFILES[i]}" slurmd; done
        stop_pid "$STATE/run/slurmctld.pid" slurmctld
    fi
    ((NODES_WANTED == 1)) || setup_network
    if ! alive "$STATE/run/slurmctld.pid" slurmctld; then
        log "starting slurmctld"
        /usr/sbin/slurmctld >>"$STATE/log/slurmctld.out" 2>&1 9>&- || die "slurmctld failed; see $STATE/log/slurmctld.log"
    fi
    wait_for 30 slurmctld ctld_up || die "slurmctld does not answer; see $STATE/log/slurmctld.log"
    for i in "${!NODES[@]}"; do start_slurmd "${NODES[i]}" "${SLURMD_PIDFILES[i]}"; done
    for i in "${!NODES[@]}"; do
        wait_for 30 "node ${NODES[i]}" node_ready "${NODES[i]}" \
            || die "node ${NODES[i]} is not idle: $(sinfo -h -N -o '%N %T %E' 2>&1 | tr '\n' ';'); see $STATE/log/"
    done
}

verify() {
    [[ $(timeout 5 sinfo -h -p "$PARTITION" -o %a 2>&1) == up ]] || die "sinfo: partition $PARTITION is not up"
    sacct_works >/dev/null 2>&1 || die "sacct does not answer: $(sacct_works 2>&1 | tail -n1)"
}

smoke() {
    local t0=$SECONDS id state
    id=$(sbatch --parsable -p "$PARTITION" -N "${#NODES[@]}" -J roma-smoke -o /dev/null --wrap 'srun true') \
        || die "sbatch failed"
    wait_for 60 "job $id" bash -c "sacct -n -X -P -j $id -o State | grep -qx COMPLETED" \
        || die "smoke job $id did not complete: $(sacct -n -X -P -j "$id" -o State)"
    log "smoke job $id COMPLETED in $((SECONDS - t0)) s"
}

main() {
    require_root
    check_settings
    take_lock
    local t0=$SECONDS
    make_layout
    install_packages
    make_daemon_dirs
    [[ -s $STATE/etc/db.pass ]] || (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$STATE/etc/db.pass")
    DB_PASS=$(<"$STATE/etc/db.pass")
    write_configs
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurm
    verify
    log "cluster $CLUSTER up: partition $PARTITION on ${NODES[*]} ($(( SECONDS - t0 )) s); logs in $STATE/log"
    ((SMOKE)) && smoke
    return 0
}

main
