#!/usr/bin/env bash
# SCIM conformance of the Genesys Cloud emulator, judged by the independent checker scim2-tester
# (through scim2-cli's `scim2 test`), once per profile (genesys, rfc7644).
#
#   .ci/scim-conformance.sh [path/to/rolesync]
#
# Without an argument the debug binary is built (cargo build) and used. A Python venv with pinned
# scim2-cli/scim2-tester is created under $SCIM_VENV (default: target/scim-venv). Exits non-zero
# if any check fails that is not on the exclusion list of .ci/scim2_conformance.py (each
# exclusion and its reason is listed in crates/genesys-cloud-emulator/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ $# -gt 0 ]; then
    BIN="$1"
    [ -x "$BIN" ] || { echo "no executable at $BIN" >&2; exit 2; }
else
    cargo build --quiet --bin rolesync
    BIN="$TARGET_DIR/debug/rolesync"
fi

PYTHON="${PYTHON:-python3}"
VENV="${SCIM_VENV:-$TARGET_DIR/scim-venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import scim2_cli, scim2_tester" 2>/dev/null; then
    echo "== creating $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "scim2-tester==0.5.2" "scim2-cli==0.6.0"
fi

free_port() {
    "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

EMULATOR_PID=""
stop_emulator() {
    if [ -n "$EMULATOR_PID" ]; then
        kill "$EMULATOR_PID" 2>/dev/null || true
        wait "$EMULATOR_PID" 2>/dev/null || true
        EMULATOR_PID=""
    fi
}
trap stop_emulator EXIT

failed=0
for profile in genesys rfc7644; do
    port="$(free_port)"
    base="http://127.0.0.1:$port"
    log="$(mktemp)"
    # The checker sends a few hundred requests in seconds: the per-token rate limit is off.
    "$BIN" emulator --bind "127.0.0.1:$port" --profile "$profile" --rate-limit-per-minute 0 >"$log" 2>&1 &
    EMULATOR_PID=$!
    token=""
    for _ in $(seq 1 100); do
        token="$("$VENV/bin/python" - "$base" <<'PY' 2>/dev/null || true
import base64, json, sys, urllib.request
req = urllib.request.Request(
    sys.argv[1] + "/oauth/token",
    data=b"grant_type=client_credentials",
    headers={
        "Authorization": "Basic " + base64.b64encode(b"rolesync-dev:rolesync-dev-secret").decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    },
)
print(json.load(urllib.request.urlopen(req, timeout=2))["access_token"])
PY
)"
        [ -n "$token" ] && break
        kill -0 "$EMULATOR_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$token" ]; then
        echo "the emulator did not start:" >&2
        cat "$log" >&2
        exit 1
    fi
    echo "== scim2 test against $base/api/v2/scim/v2 (profile $profile)"
    if ! SCIM_CLI_HEADERS="Authorization: Bearer $token" \
        "$VENV/bin/python" .ci/scim2_conformance.py "$profile" "$base/api/v2/scim/v2"; then
        failed=1
    fi
    stop_emulator
    rm -f "$log"
done
exit "$failed"
