#!/usr/bin/env bash
# Starts one of c10k's benchmark peers in the foreground on 127.0.0.1:PORT.
#
#   bench/baselines/run.sh NAME PORT [WORKERS]   start peer NAME; PORT 0 picks a free one
#   bench/baselines/run.sh install               install and build every peer ahead of a run
#   bench/baselines/run.sh install-wrk           install wrk alone (c10k bench's cross-check)
#   bench/baselines/run.sh versions              print what is installed, one peer a line
#
# NAME: nginx, apache-prefork, apache-event, tornado, gevent, hyper, raw.
# WORKERS: nginx worker processes (default: one per core); apache-prefork's most
# processes (256); apache-event's processes of 64 threads (one per core); tornado's and
# gevent's processes (1; above 1 each has its own rooms: plaintext only); hyper's and
# raw's threads (one per core).
#
# Installs what the peer needs when it is missing (Debian's nginx, apache2 and wrk with
# apt-get; tornado and gevent with pip; cargo build --release --locked for hyper and raw),
# then prints exactly one line on standard output once GET /plaintext answers
# `Hello, World!`:
#   peer NAME listening on http://127.0.0.1:PORT/
# Everything else goes to standard error. Exits when the peer exits, with its status; on
# SIGTERM (or SIGINT) stops the peer's whole process group and exits 0. The peer's
# configuration, pid, logs and temporary files live in a run directory, $C10K_PEER_DIR
# if set (kept), else a fresh one under /tmp (removed on exit).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TORNADO_VERSION=6.6.1
GEVENT_VERSION=26.9.0
READY_TIMEOUT=${C10K_PEER_READY_TIMEOUT:-30}
PEERS="nginx apache-prefork apache-event tornado gevent hyper raw"

log() { echo "run.sh: $*" >&2; }
die() { log "$*"; exit 2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

# --- installing -------------------------------------------------------------------------

# Installs Debian packages without letting their maintainer scripts start the services
# (nginx and apache2 would otherwise take port 80), and stops any that started anyway.
apt_install() {
    local made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# c10k bench/baselines/run.sh: no service starts during install\nexit 101\n' \
            > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    # No package list yet (a fresh machine): fetch one first.
    apt-cache show "$@" >/dev/null 2>&1 || apt-get update >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2 || rc=$?
    if [ "$rc" -ne 0 ]; then
        # An old package list: refresh it once and try again.
        apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2 && rc=0
    fi
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    # Belt and braces: Debian's own services, if they started, give port 80 back.
    for pkg in "$@"; do
        case "$pkg" in
            nginx) service nginx stop >/dev/null 2>&1 || true ;;
            apache2) apache2ctl stop >/dev/null 2>&1 || true ;;
        esac
    done
    return "$rc"
}

need_debian() { # need_debian PACKAGE COMMAND...
    local pkg=$1 missing=""
    shift
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing=1
    done
    if [ -n "$missing" ]; then
        log "installing $pkg (apt-get)"
        apt_install "$pkg"
    fi
}

need_python() {
    if ! python3 -c "import tornado, gevent, sys; sys.exit(not (tornado.version == '$TORNADO_VERSION' and gevent.__version__ == '$GEVENT_VERSION'))" 2>/dev/null; then
        log "installing tornado==$TORNADO_VERSION gevent==$GEVENT_VERSION (pip)"
        python3 -m pip install -q "tornado==$TORNADO_VERSION" "gevent==$GEVENT_VERSION" >&2 ||
            python3 -m pip install -q --break-system-packages "tornado==$TORNADO_VERSION" "gevent==$GEVENT_VERSION" >&2
    fi
}

need_cargo() { # need_cargo PROJECT-DIR
    cargo build --release --locked --quiet --manifest-path "$HERE/$1/Cargo.toml" >&2
}

need_for() {
    case "$1" in
        nginx) need_debian nginx nginx ;;
        apache-prefork | apache-event) need_debian apache2 apache2 ;;
        tornado | gevent) need_python ;;
        hyper) need_cargo hyper_plaintext ;;
        raw) need_cargo raw_floor ;;
    esac
}

install_all() {
    local missing=()
    for pair in nginx:nginx apache2:apache2 wrk:wrk curl:curl; do
        command -v "${pair#*:}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair#*:}" ] || missing+=("${pair%%:*}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]} (apt-get)"
        apt_install "${missing[@]}"
    fi
    need_python
    need_cargo hyper_plaintext
    need_cargo raw_floor
    versions
}

versions() {
    dpkg-query -W -f='nginx ${Version}\n' nginx 2>/dev/null || echo "nginx not installed"
    dpkg-query -W -f='apache2 ${Version}\n' apache2 2>/dev/null || echo "apache2 not installed"
    dpkg-query -W -f='wrk ${Version}\n' wrk 2>/dev/null || echo "wrk not installed"
    python3 -c 'import tornado; print("tornado", tornado.version)' 2>/dev/null || echo "tornado not installed"
    python3 -c 'import gevent, greenlet; print("gevent", gevent.__version__, "greenlet", greenlet.__version__)' 2>/dev/null ||
        echo "gevent not installed"
    python3 -c 'import sys; print("python", sys.version.split()[0])'
    for crate in hyper hyper-util tokio; do
        awk -v n="$crate" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print n, $0 }' \
            "$HERE/hyper_plaintext/Cargo.lock"
    done
    rustc --version 2>/dev/null || true
}

# --- running ----------------------------------------------------------------------------

render() { # render TEMPLATE OUT
    sed -e "s|@PORT@|$PORT|g" -e "s|@WORKERS@|$WORKERS|g" -e "s|@DIR@|$DIR|g" \
        -e "s|@MAX_REQUEST_WORKERS@|$((WORKERS * 64))|g" "$HERE/$1" > "$2"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

PEER_PID=""
MADE_DIR=""
cleanup() {
    if [ -n "$MADE_DIR" ] && [ -d "$MADE_DIR" ]; then
        rm -rf "$MADE_DIR"
    fi
}

stop_peer() {
    if [ -n "$PEER_PID" ] && kill -0 "$PEER_PID" 2>/dev/null; then
        # The peer leads its own process group (setsid): stop it and its workers together.
        kill -TERM -- "-$PEER_PID" 2>/dev/null || kill -TERM "$PEER_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do
            kill -0 "$PEER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$PEER_PID" 2>/dev/null || true
        wait "$PEER_PID" 2>/dev/null || true
    fi
}

on_signal() {
    trap - TERM INT HUP
    stop_peer
    cleanup
    exit 0
}

show_logs() {
    local f
    for f in "$DIR"/error.log; do
        [ -s "$f" ] && { log "$f:"; tail -n 20 "$f" >&2; }
    done
    return 0
}

run_peer() {
    NAME=$1
    PORT=$2
    case " $PEERS " in *" $NAME "*) ;; *) die "unknown peer '$NAME' (one of: $PEERS)" ;; esac
    [[ "$PORT" =~ ^[0-9]+$ ]] || die "bad port '$PORT'"
    [ "$PORT" -eq 80 ] && die "port 80 is Debian's services' port; pick another (0: any free port)"
    [ "$PORT" -eq 0 ] && PORT=$(free_port)
    case "$NAME" in
        nginx | apache-event | hyper | raw) WORKERS=${3:-$(nproc)} ;;
        apache-prefork) WORKERS=${3:-256} ;;
        tornado | gevent) WORKERS=${3:-1} ;;
    esac
    [[ "$WORKERS" =~ ^[0-9]+$ ]] && [ "$WORKERS" -gt 0 ] || die "bad workers '$WORKERS'"

    need_for "$NAME"
    command -v curl >/dev/null 2>&1 || need_debian curl curl

    if [ -n "${C10K_PEER_DIR:-}" ]; then
        DIR=$C10K_PEER_DIR
        mkdir -p "$DIR"
    else
        DIR=$(mktemp -d /tmp/c10k-peer.XXXXXX)
        MADE_DIR=$DIR
    fi
    DIR=$(cd "$DIR" && pwd)
    chmod 755 "$DIR" # Apache's children (www-data) read htdocs/ under it

    # Room for many connections; the peers' own caps (nginx worker_connections, Apache's
    # MaxRequestWorkers) still apply.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

    local cmd
    case "$NAME" in
        nginx)
            render nginx.conf "$DIR/nginx.conf"
            mkdir -p "$DIR/tmp"
            cmd=(nginx -p "$DIR/" -c "$DIR/nginx.conf" -e "$DIR/error.log" -g "daemon off;")
            ;;
        apache-prefork | apache-event)
            render "$NAME.conf" "$DIR/apache.conf"
            mkdir -p "$DIR/htdocs"
            printf 'Hello, World!' > "$DIR/htdocs/plaintext"
            chmod 755 "$DIR/htdocs"
            chmod 644 "$DIR/htdocs/plaintext"
            cmd=(apache2 -f "$DIR/apache.conf" -DFOREGROUND)
            ;;
        tornado) cmd=(python3 "$HERE/tornado_chat.py" --port "$PORT" --processes "$WORKERS") ;;
        gevent) cmd=(python3 "$HERE/gevent_chat.py" --port "$PORT" --processes "$WORKERS") ;;
        hyper) cmd=("$HERE/hyper_plaintext/target/release/hyper-plaintext" --port "$PORT" --threads "$WORKERS") ;;
        raw) cmd=("$HERE/raw_floor/target/release/raw-floor" --port "$PORT" --threads "$WORKERS") ;;
    esac
    [ "${cmd[0]}" = nginx ] && cmd[0]=$(command -v nginx || echo /usr/sbin/nginx)
    [ "${cmd[0]}" = apache2 ] && cmd[0]=$(command -v apache2 || echo /usr/sbin/apache2)

    trap on_signal TERM INT HUP
    log "starting $NAME: ${cmd[*]}"
    # Its own session and process group, so that stopping it stops its workers too; its
    # standard output (the Python and Rust peers print their own line) goes to stderr.
    setsid "${cmd[@]}" >&2 &
    PEER_PID=$!

    local url="http://127.0.0.1:$PORT/" deadline=$((SECONDS + READY_TIMEOUT)) body=""
    while :; do
        if ! kill -0 "$PEER_PID" 2>/dev/null; then
            local rc=0
            wait "$PEER_PID" || rc=$?
            log "$NAME exited (status $rc) before answering"
            show_logs
            cleanup
            exit "$((rc == 0 ? 1 : rc))"
        fi
        body=$(curl -s -m 1 "${url}plaintext" 2>/dev/null || true)
        [ "$body" = "Hello, World!" ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$NAME did not answer GET /plaintext within ${READY_TIMEOUT}s"
            show_logs
            stop_peer
            cleanup
            exit 1
        fi
        sleep 0.1
    done
    echo "peer $NAME listening on $url"

    local rc=0
    wait "$PEER_PID" || rc=$?
    # wait returns early when a trapped signal arrives; on_signal then exits.
    while kill -0 "$PEER_PID" 2>/dev/null; do
        wait "$PEER_PID" || rc=$?
    done
    log "$NAME exited (status $rc)"
    show_logs
    cleanup
    exit "$rc"
}

case "${1:-}" in
    install) install_all ;;
    install-wrk) need_debian wrk wrk ;;
    versions) versions ;;
    "" | -h | --help | help) usage ;;
    *) [ $# -ge 2 ] && [ $# -le 3 ] || usage; run_peer "$@" ;;
esac
