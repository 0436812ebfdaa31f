#!/usr/bin/env bash
# Property-based tests of the HTTP API by schemathesis (an independent tester, PyPI, pinned below):
# it reads the served /openapi.json and sends generated requests to every operation of a running
# rolesync whose target is the emulator, then judges each answer against the document with the
# checks not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance and response_headers_conformance. Exits non-zero on any failure,
# or when a tool or a server cannot be started.
#
#   .ci/schemathesis.sh [path/to/rolesync]
#
# Without an argument the debug binary is built (cargo build) and used. schemathesis is installed
# into the venv $VENV (default: target/ci-venv, the one .ci/run makes) unless it is there already.
# Bounds: ST_MAX_EXAMPLES generated cases per operation and phase (default 30), ST_WORKERS
# concurrent workers (default 1), ST_PHASES (default examples,coverage,fuzzing), ST_TIMEOUT seconds for the whole run (default 900: past it the
# run is stopped and fails), ST_SEED a seed to replay a run (a run prints its seed).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance

fail() { echo "FAILED: $*" >&2; exit 1; }

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ $# -gt 0 ]; then
    BIN="$1"
    [ -x "$BIN" ] || fail "no executable at $BIN"
else
    cargo build --quiet --bin rolesync
    BIN="$TARGET_DIR/debug/rolesync"
fi

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$TARGET_DIR/ci-venv}"
ST="$VENV/bin/schemathesis"
if ! "$ST" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" || fail "cannot create a Python venv at $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
        || fail "cannot install schemathesis==$SCHEMATHESIS_VERSION (PyPI) into $VENV"
fi

WORK="$(mktemp -d)"
EMULATOR_PID=""
SERVER_PID=""
cleanup() {
    for pid in "$SERVER_PID" "$EMULATOR_PID"; do
        if [ -n "$pid" ]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
# Waits until URL answers 200, for at most SECONDS, while PID lives.
wait_for() {
    local url="$1" seconds="$2" pid="$3" what="$4" log="$5"
    "$VENV/bin/python" - "$url" "$seconds" "$pid" <<'PY' || { echo "$what did not become ready; its log:" >&2; cat "$log" >&2; exit 1; }
import os, sys, time, urllib.request
url, deadline, pid = sys.argv[1], time.monotonic() + float(sys.argv[2]), int(sys.argv[3])
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"it exited")
    try:
        if urllib.request.urlopen(url, timeout=2).status == 200:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(f"not ready within {sys.argv[2]} s")
PY
}

emulator_port="$(free_port)"
server_port="$(free_port)"
base="http://127.0.0.1:$server_port"

# A key with every scope, made for this run; the service knows only its SHA-256.
KEY="$("$VENV/bin/python" -c 'import secrets; print("st-" + secrets.token_hex(16))')"
DIGEST="$(printf '%s\n' "$KEY" | "$BIN" hash-key)"
cat >"$WORK/rolesync.toml" <<EOF
[server]
bind = "127.0.0.1:$server_port"
shutdown_grace_secs = 2
[store]
url = "sqlite://$WORK/rolesync.db"
[target]
scim_base = "http://127.0.0.1:$emulator_port/api/v2/scim/v2"
token_url = "http://127.0.0.1:$emulator_port/oauth/token"
client_id = "rolesync-dev"
client_secret = "rolesync-dev-secret"
requests_per_minute = 60000
[log]
format = "json"
[[auth.keys]]
name = "schemathesis"
key_sha256 = "$DIGEST"
scopes = ["jobs:write", "jobs:read", "roles:privileged", "admin"]
# Schemathesis exercises the operations, not the failed-authentication limit (429 is documented
# on every /v1 operation; tests/api/access_keys.rs tests the limit).
[auth.failures]
max_failures = 1000000
EOF

"$BIN" emulator --bind "127.0.0.1:$emulator_port" --rate-limit-per-minute 0 >"$WORK/emulator.log" 2>&1 &
EMULATOR_PID=$!
wait_for "http://127.0.0.1:$emulator_port/emulator/stats" 60 "$EMULATOR_PID" "the emulator" "$WORK/emulator.log"

RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve --config "$WORK/rolesync.toml" >"$WORK/rolesync.log" 2>&1 &
SERVER_PID=$!
wait_for "$base/readyz" 120 "$SERVER_PID" "rolesync" "$WORK/rolesync.log"

seed_args=()
[ -n "${ST_SEED:-}" ] && seed_args=(--seed "$ST_SEED")
echo "== schemathesis $SCHEMATHESIS_VERSION against $base/openapi.json (checks: $CHECKS)"
status=0
SCHEMATHESIS_HOOKS="$PWD/.ci/schemathesis_hooks.py" \
    timeout "${ST_TIMEOUT:-900}" "$ST" run "$base/openapi.json" \
    --checks "$CHECKS" \
    --header "Authorization: Bearer $KEY" \
    --max-examples "${ST_MAX_EXAMPLES:-30}" \
    --workers "${ST_WORKERS:-1}" \
    --phases "${ST_PHASES:-examples,coverage,fuzzing}" \
    --request-timeout 30 \
    --output-sanitize true \
    "${seed_args[@]}" || status=$?

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "rolesync exited during the run; its log:" >&2
    cat "$WORK/rolesync.log" >&2
    status=1
fi
if grep -q '"level":"ERROR"' "$WORK/rolesync.log"; then
    echo "rolesync logged errors during the run:" >&2
    grep '"level":"ERROR"' "$WORK/rolesync.log" | head -n 20 >&2
fi
[ "$status" -eq 0 ] || fail "schemathesis reported failures (exit $status)"
echo "schemathesis: 0 failures"
