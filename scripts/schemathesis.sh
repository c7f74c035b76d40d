#!/usr/bin/env bash
# Runs schemathesis against a live `grin serve` on a throw-away SQLite
# database: no 5xx, every response conforming to openapi.yaml.
# Needs: the grin binary (cargo build -p grin-cli), Python 3.
# Assumes `grin serve --db URL --bind ADDR` and `grin keys create --db URL --role ROLE --name NAME`
# printing the secret on its last line (the CLI wires grin_api::serve).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-18080}"
WORK="$(mktemp -d)"
DB="sqlite://$WORK/grin.db?mode=rwc"
GRIN="${GRIN:-target/debug/grin}"
export GRIN_HMAC_SECRET="${GRIN_HMAC_SECRET:-schemathesis-throwaway-secret}"
trap 'kill "${SERVER_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

ST="${ST:-}"
if [ -z "$ST" ]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install --quiet 'schemathesis==4.32.5'
  ST="$WORK/venv/bin/st"
fi

"$GRIN" migrate --db "$DB"
KEY="$("$GRIN" keys create --db "$DB" --role admin --name schemathesis | tail -n 1)"
# A registered model, so the model and version routes have something to find.
"$GRIN" models register --db "$DB" --name m --checkpoint crates/grin/tests/data/models/llama2_untied >/dev/null
"$GRIN" serve --db "$DB" --bind "127.0.0.1:$PORT" &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done

"$ST" run openapi.yaml \
  --url "http://127.0.0.1:$PORT" \
  -H "Authorization: Bearer $KEY" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --exclude-path-regex '/events$' \
  --max-examples 50 \
  --generation-deterministic
