#!/usr/bin/env bash
# Throwaway sshd for the ssh backend tests (Debian openssh-server), independent of any system sshd.
#
#   bash scripts/start-sshd.sh            start it (idempotent: a live one with the same config is kept)
#   bash scripts/start-sshd.sh --status   exit 0 if it is running
#   bash scripts/start-sshd.sh --stop     stop it
#
# Listens on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (the whole 127/8 is local on Linux: three "hosts"),
# port $GP_TEST_SSH_PORT (default 22222), with its own host key and one authorised ed25519 client key for root.
# State in .ci-state/ssh/ (override with GP_TEST_SSH_DIR):
#   client_key, client_key.pub   private/public key to log in as root
#   known_hosts                  host key for [127.0.0.1]:PORT, [127.0.0.2]:PORT, [127.0.0.3]:PORT
#   ssh_config                   for humans:  ssh -F .ci-state/ssh/ssh_config 127.0.0.2
#   sshd_config, sshd.pid, sshd.log, host_ed25519_key
# Remote commands get sshd's minimal default PATH: call the venv's python by absolute path.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=${GP_TEST_SSH_DIR:-$ROOT/.ci-state/ssh}
PORT=${GP_TEST_SSH_PORT:-22222}
ADDRS=(127.0.0.1 127.0.0.2 127.0.0.3)
SSHD=/usr/sbin/sshd

log() { echo "[start-sshd] $*" >&2; }
die() { echo "[start-sshd] ERROR: $*" >&2; exit 1; }

mkdir -p "$D"
chmod 700 "$D"
D=$(cd "$D" && pwd)

running_pid() {   # prints the pid of our sshd if it is alive
    local pid
    [ -s "$D/sshd.pid" ] || return 1
    pid=$(cat "$D/sshd.pid")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    # the pid must be an sshd started with *our* config (pids get reused)
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-f $D/sshd_config" || return 1
    echo "$pid"
}

stop_sshd() {
    local pid
    if pid=$(running_pid); then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        log "stopped sshd (pid $pid)"
    fi
    rm -f "$D/sshd.pid"
}

case "${1:-}" in
    --status) running_pid >/dev/null; exit ;;
    --stop) stop_sshd; exit 0 ;;
    "") ;;
    *) die "usage: $0 [--status|--stop]" ;;
esac

[ -x "$SSHD" ] || die "$SSHD not found (run scripts/setup-system.sh to install openssh-server)"
command -v ssh-keygen >/dev/null || die "ssh-keygen not found (openssh-client)"

[ -f "$D/host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C gp-test-host -f "$D/host_ed25519_key"
[ -f "$D/client_key" ] || ssh-keygen -q -t ed25519 -N '' -C gp-test-client -f "$D/client_key"
chmod 600 "$D/host_ed25519_key" "$D/client_key"
cp "$D/client_key.pub" "$D/authorized_keys"
chmod 600 "$D/authorized_keys"

hostkey=$(cut -d' ' -f1,2 "$D/host_ed25519_key.pub")
: >"$D/known_hosts.tmp"
for a in "${ADDRS[@]}"; do echo "[$a]:$PORT $hostkey" >>"$D/known_hosts.tmp"; done
mv "$D/known_hosts.tmp" "$D/known_hosts"

cat >"$D/ssh_config" <<EOF
Host 127.0.0.1 127.0.0.2 127.0.0.3
    Port $PORT
    User root
    IdentityFile $D/client_key
    IdentitiesOnly yes
    UserKnownHostsFile $D/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
EOF

{
    echo "Port $PORT"
    for a in "${ADDRS[@]}"; do echo "ListenAddress $a"; done
    cat <<EOF
HostKey $D/host_ed25519_key
PidFile $D/sshd.pid
AuthorizedKeysFile $D/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
AllowTcpForwarding yes
AcceptEnv LANG LC_* GP_* KERNEL_* JUPYTER_*
MaxSessions 100
MaxStartups 100:30:200
LoginGraceTime 30
Subsystem sftp internal-sftp
EOF
} >"$D/sshd_config.new"

if pid=$(running_pid) && cmp -s "$D/sshd_config.new" "$D/sshd_config"; then
    rm -f "$D/sshd_config.new"
    log "sshd already running (pid $pid) on ${ADDRS[*]} port $PORT"
    exit 0
fi
stop_sshd   # stale pid file or changed config
mv "$D/sshd_config.new" "$D/sshd_config"
for a in "${ADDRS[@]}"; do
    if (exec 3<>"/dev/tcp/$a/$PORT") 2>/dev/null; then
        die "$a:$PORT is already in use by another process (a test sshd of another checkout? stop it with" \
            "its scripts/stop-backends.sh, or choose another port with GP_TEST_SSH_PORT)"
    fi
done

mkdir -p /run/sshd   # privilege-separation dir sshd insists on
chmod 755 /run/sshd
"$SSHD" -t -f "$D/sshd_config" || die "invalid sshd config $D/sshd_config"
: >"$D/sshd.log"
"$SSHD" -f "$D/sshd_config" -E "$D/sshd.log"   # daemonises; writes sshd.pid

ssh_ok() {
    ssh -F /dev/null -i "$D/client_key" -o IdentitiesOnly=yes -o BatchMode=yes \
        -o UserKnownHostsFile="$D/known_hosts" -o StrictHostKeyChecking=yes -o ConnectTimeout=5 \
        -p "$PORT" "root@$1" true 2>>"$D/ssh-check.log"
}
for a in "${ADDRS[@]}"; do
    for i in $(seq 1 50); do
        if (exec 3<>"/dev/tcp/$a/$PORT") 2>/dev/null; then break; fi
        [ "$i" = 50 ] && { tail -n 20 "$D/sshd.log" >&2; die "sshd is not listening on $a:$PORT"; }
        sleep 0.1
    done
    ssh_ok "$a" || { tail -n 20 "$D/sshd.log" "$D/ssh-check.log" >&2; die "cannot log in to $a:$PORT with $D/client_key"; }
done
log "sshd up (pid $(cat "$D/sshd.pid")) on ${ADDRS[*]} port $PORT; state in $D"
