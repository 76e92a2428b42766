#!/usr/bin/env bash
# W10: a running `penguiflow worker --metrics ADDR` serves /metrics (Prometheus text,
# parsed here) and /healthz; the scrape reflects the jobs it ran and never labels by trace.
set -euo pipefail
bin=$1
dir=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
q="sqlite://$dir/jobs.db"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
for i in 1 2 3; do "$bin" enqueue --queue "$q" --flow quickstart --tenant acme --payload '{"query": "metrics please"}' >/dev/null; done
"$bin" enqueue --queue "$q" --flow flaky --tenant acme --max-attempts 1 --payload '{"fail": true}' >/dev/null
"$bin" worker --queue "$q" --metrics "127.0.0.1:$port" --log-level warn 2>"$dir/worker.log" &
pid=$!
python3 - "$port" <<'PY'
import re, sys, time, urllib.request, urllib.error
port = sys.argv[1]
def get(path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, "", e.read().decode()
deadline = time.time() + 30
samples = {}
while time.time() < deadline:
    try:
        status, ctype, body = get("/metrics")
    except OSError:
        time.sleep(0.05); continue
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    samples = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)', line)
        assert m, f"not a Prometheus sample line: {line!r}"
        samples[(m.group(1), m.group(3) or "")] = float(m.group(4))
    ok = samples.get(("penguiflow_jobs_total", 'flow="quickstart",outcome="succeeded"'), 0)
    dead = samples.get(("penguiflow_jobs_total", 'flow="flaky",outcome="dead"'), 0)
    if ok == 3 and dead == 1:
        break
    time.sleep(0.05)
else:
    sys.exit(f"jobs never showed up in /metrics: {sorted(k for k in samples if k[0].startswith('penguiflow_jobs'))}")
assert any(k[0] == "penguiflow_node_latency_ms_count" and 'node="triage"' in k[1] for k in samples), "no node latency histogram"
assert not any("trace_id" in k[1] for k in samples), "a metric is labelled by trace id"
status, _, body = get("/healthz")
assert status == 200, (status, body)
assert get("/nope")[0] == 404
print(f"scraped {len(samples)} samples: OK")
PY
kill -TERM "$pid"
wait "$pid"
pid=""
echo "metrics scrape: OK"
