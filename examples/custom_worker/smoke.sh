#!/usr/bin/env bash
# Smoke test of the custom worker: enqueue good and bad orders, run until empty, check.
set -euo pipefail
bin=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
q="sqlite://$dir/orders.db"
"$bin" enqueue --queue "$q" --flow orders --tenant acme --payload '{"order_id": 7, "amount": 12.5}' >/dev/null
"$bin" enqueue --queue "$q" --flow orders --tenant acme --payload '{"order_id": 8, "amount": -1}' >/dev/null
"$bin" worker --queue "$q" --exit-when-empty --log-level warn 2>/dev/null
stats=$("$bin" stats --queue "$q" --json)
echo "$stats"
python3 - "$stats" <<'PY'
import json, sys
s = json.loads(sys.argv[1])["by_state"]
assert s.get("succeeded") == 1 and s.get("dead") == 1, s
PY
"$bin" dead --queue "$q" | grep -q "amount must be positive"
echo "custom worker: OK"
