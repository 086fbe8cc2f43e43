#!/usr/bin/env bash
# The Autobahn TestSuite's fuzzingclient against c10k's two WebSocket endpoints, the echo
# (/ws/echo, served with --websocket-echo: what Autobahn expects of a server) and the
# chat's (/api/rooms/autobahn/ws), then gate.py over its report: exits 1 if any case
# failed (gate.py says how each endpoint is judged).
#
#   bench/autobahn/run.sh [MODEL ARGS...]     e.g. bench/autobahn/run.sh --model reactor
#
# Autobahn's wstest is Python 2 only. Debian bookworm has no python2 package: this uses a
# Python 2.7 the machine already has (PYTHON2, python2.7 on PATH, or pyenv's 2.7.x) and
# installs autobahntestsuite from PyPI into a virtualenv under target/autobahn/. Without
# a Python 2.7 it says so and exits 2. Cases 9.* (messages of 64 KiB to 16 MiB; the
# server's limit is 64 KiB and it closes 1009 above it, tests/conformance/websocket.rs)
# and 12.*/13.* (permessage-deflate, which c10k does not negotiate) are excluded.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=bench/autobahn
work=target/autobahn
mkdir -p "$work"

python2=${PYTHON2:-}
if [ -z "$python2" ]; then
  python2=$(command -v python2.7 || true)
fi
if [ -z "$python2" ] || ! "$python2" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
  python2=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python 2>/dev/null | tail -1 || true)
fi
if [ -z "$python2" ]; then
  echo "!! no Python 2.7 (PYTHON2, python2.7, pyenv): Autobahn's wstest cannot run here"
  exit 2
fi
venv=$work/venv
if [ ! -x "$venv/bin/wstest" ]; then
  echo "== installing autobahntestsuite into $venv with $python2"
  "$python2" -m pip install --quiet --disable-pip-version-check 'virtualenv<20.22'
  "$python2" -m virtualenv --quiet "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'autobahntestsuite==25.10.1'
fi

cargo build --quiet --bin c10k
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf "$work/reports" "$work/db.sqlite3"*
target/debug/c10k serve --listen "127.0.0.1:$port" --db "$work/db.sqlite3" --websocket-echo "$@" >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

cat >"$work/fuzzingclient.json" <<JSON
{
  "outdir": "$PWD/$work/reports",
  "servers": [
    {"agent": "echo", "url": "ws://127.0.0.1:$port/ws/echo"},
    {"agent": "chat", "url": "ws://127.0.0.1:$port/api/rooms/autobahn/ws"}
  ],
  "cases": ["*"],
  "exclude-cases": ["9.*", "12.*", "13.*"],
  "exclude-agent-cases": {}
}
JSON
echo "== wstest -m fuzzingclient against ws://127.0.0.1:$port/ws/echo and /api/rooms/autobahn/ws ($*)"
(cd "$work" && timeout 1200 "$PWD/venv/bin/wstest" -m fuzzingclient -s fuzzingclient.json >wstest.log 2>&1) ||
  { echo "!! wstest failed; see $work/wstest.log"; tail -20 "$work/wstest.log"; exit 1; }
kill $server 2>/dev/null || true
python3 "$here/gate.py" "$work/reports"
