#!/usr/bin/env bash
# External load figures for the emulator with wrk (apt-get install -y wrk).
#   benches/wrk/run.sh [path/to/genesys-cloud-emulator]   (default: the release binary, built if missing)
# Environment: USERS (default 100000), SECS (default 10), CONNECTIONS (default 64),
# THREADS (wrk threads, default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET_DIR="${CARGO_TARGET_DIR:-../../target}"
BIN="${1:-$TARGET_DIR/release/genesys-cloud-emulator}"
[ -x "$BIN" ] || cargo build --release -p genesys-cloud-emulator --bin genesys-cloud-emulator
USERS="${USERS:-100000}" SECS="${SECS:-10}" CONNECTIONS="${CONNECTIONS:-64}" THREADS="${THREADS:-2}"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
"$BIN" --bind "127.0.0.1:$port" --users "$USERS" --rate-limit-per-minute 0 >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    curl -fs "$base/emulator/faults" >/dev/null 2>&1 && break
    sleep 0.1
done
TOKEN=$(curl -fs -u rolesync-dev:rolesync-dev-secret -d grant_type=client_credentials "$base/oauth/token" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
IDS=$(mktemp)
curl -fs "$base/emulator/users" | python3 -c 'import json,sys; print("\n".join(u["id"] for u in json.load(sys.stdin)))' >"$IDS"
export TOKEN USERS IDS
echo "== GET filter externalId eq ($USERS users, $CONNECTIONS connections, ${SECS}s)"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECS}s" -s benches/wrk/filter.lua "$base"
echo "== PATCH replace roles"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECS}s" -s benches/wrk/patch.lua "$base"
rm -f "$IDS"
