#!/usr/bin/env bash
# Install (when missing) and start a one-node SLURM 22.05 cluster with accounting, on this Debian
# machine, as root, without systemd: munged, MariaDB, slurmdbd, slurmctld, slurmd as plain daemons.
#
#   sudo bash slurm/local/start.sh [--smoke]     # --smoke: also run one job and wait for COMPLETED
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
for arg in "$@"; do
    case $arg in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown argument '$arg' (known: --smoke)" ;;
    esac
done

PACKAGES=(slurmctld slurmd slurm-client slurmdbd slurm-wlm-mysql-plugin munge mariadb-server)
NODE=$(hostname -s)
CPUS=${ROMA_SLURM_CPUS:-$(nproc)}
# 90% of the machine's memory: a RealMemory above what slurmd sees would drain the node.
MEM_MB=${ROMA_SLURM_MEM_MB:-$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)}

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

# render TEMPLATE: fill the @KEY@ fields of a config template.
render() {
    sed -e "s|@STATE@|$STATE|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@PARTITION@|$PARTITION|g" \
        -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" \
        -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" "$1"
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
    install -d -m 0755 "$STATE" "$STATE/etc" "$STATE/log" "$STATE/run" "$STATE/spool" \
        "$STATE/spool/slurmctld" "$STATE/spool/slurmd"
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
    munge_works && return 0   # ours, or a munged the machine already runs
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
    {
        printf 'CLUSTER=%s\nPARTITION=%s\nNODE=%s\nCPUS=%s\nMEM_MB=%s\n' "$CLUSTER" "$PARTITION" "$NODE" "$CPUS" "$MEM_MB"
        printf 'STATE=%s\nSLURM_CONF=%s\n' "$STATE" "$SLURM_CONF"
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

node_ready() {  # idle/mixed/allocated; resumes a node left drained or down by an earlier run
    local state
    state=$(timeout 5 sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1)
    case $state in
        idle|mixed|allocated|completing) return 0 ;;
        drain*|down) timeout 5 scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    return 1
}

start_slurm() {
    if ((CONF_CHANGED)); then  # a changed slurm.conf needs fresh daemons
        stop_pid "$STATE/run/slurmd.pid" slurmd
        stop_pid "$STATE/run/slurmctld.pid" slurmctld
    fi
    if ! alive "$STATE/run/slurmctld.pid" slurmctld; then
        log "starting slurmctld"
        /usr/sbin/slurmctld >>"$STATE/log/slurmctld.out" 2>&1 9>&- || die "slurmctld failed; see $STATE/log/slurmctld.log"
    fi
    wait_for 30 slurmctld ctld_up || die "slurmctld does not answer; see $STATE/log/slurmctld.log"
    if ! alive "$STATE/run/slurmd.pid" slurmd; then
        log "starting slurmd (node $NODE: $CPUS CPUs, $MEM_MB MB)"
        /usr/sbin/slurmd >>"$STATE/log/slurmd.out" 2>&1 9>&- || die "slurmd failed; see $STATE/log/slurmd.log"
    fi
    wait_for 30 "node $NODE" node_ready \
        || die "node $NODE is not idle: $(sinfo -h -N -o '%T %E' 2>&1); see $STATE/log/slurmd.log"
}

verify() {
    [[ $(timeout 5 sinfo -h -p "$PARTITION" -o %a 2>&1) == up ]] || die "sinfo: partition $PARTITION is not up"
    sacct_works >/dev/null 2>&1 || die "sacct does not answer: $(sacct_works 2>&1 | tail -n1)"
}

smoke() {
    local t0=$SECONDS id state
    id=$(sbatch --parsable -p "$PARTITION" -J roma-smoke -o /dev/null --wrap true) || die "sbatch failed"
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
    log "cluster $CLUSTER up: partition $PARTITION on $NODE ($(( SECONDS - t0 )) s); logs in $STATE/log"
    ((SMOKE)) && smoke
    return 0
}

main
