#!/usr/bin/env python3
"""Side by side: upstream PenguiFlow (Python, bench_core.py) vs PenguiFlow C++ (core_bench).

Runs the same workloads of both in one run on this machine, interleaved rep by rep (Python
rep 1, C++ rep 1, Python rep 2, ...) so drift in background load hits both alike, then
prints the ratios (ours / upstream) against the core-runtime targets.

    bench/run_core_side_by_side.py                  # 3 reps (~4-6 min)
    bench/run_core_side_by_side.py --quick          # smoke sizes, 1 rep
    bench/run_core_side_by_side.py --reps 5 --py-sizes

Needs: build/bench/core_bench (scripts/build.sh core_bench), python3 with pydantic 2, and
upstream's source checked out in bench/penguiflow-src (git-ignored; never commit it) as
../shared/bench/penguiflow-py/README.md says. ../shared/bench/penguiflow-py is read-only: it
is copied to a temporary directory and run from there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY_BENCH = Path(os.environ.get("PENGUIFLOW_PY_BENCH", ROOT.parent / "shared" / "bench" / "penguiflow-py"))

SHARED_CASES = [
    "throughput_dict",
    "throughput_message",
    "roundtrip_seq",
    "roundtrip_conc",
    "job_worker",
    "policy_dict_none",
    "policy_dict_retry",
    "policy_message_none",
    "policy_message_retry",
]
CPP_ONLY = ["throughput_int", "baseline_handoff", "baseline_call", "idle_flow", "rss_10m"]
RATE = {
    "throughput_dict": "msgs_per_s",
    "throughput_message": "msgs_per_s",
    "roundtrip_seq": "roundtrips_per_s",
    "roundtrip_conc": "roundtrips_per_s",
    "job_worker": "jobs_per_s",
    "policy_dict_none": "msgs_per_s",
    "policy_dict_retry": "msgs_per_s",
    "policy_message_none": "msgs_per_s",
    "policy_message_retry": "msgs_per_s",
}

CHECKOUT_HELP = """upstream's source is missing at {src}.
Fetch github:hurtener/penguiflow with the search tool's `fetch` (it answers with a bare git
directory), then, from bench/:
    git clone -q --no-checkout <that git dir> penguiflow-src
    cd penguiflow-src && git ls-tree -r --name-only HEAD penguiflow pyproject.toml \\
        | grep -v '/dist/' | xargs git checkout HEAD -- && cd ..
(or pass --penguiflow-src DIR)."""


def load(path: Path) -> list[dict]:
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        if r.get("case") != "meta":
            out.append(r)
    return out


def med(results: list[dict], case: str, key: str) -> float | None:
    vals = [r[key] for r in results if r.get("case") == case and "error" not in r and key in r]
    return statistics.median(vals) if vals else None


def span(results: list[dict], case: str, key: str) -> str:
    vals = [r[key] for r in results if r.get("case") == case and "error" not in r and key in r]
    if not vals:
        return "-"
    f = "{:,.0f}" if max(vals) >= 100 else "{:,.1f}"
    return f"{f.format(statistics.median(vals))} [{f.format(min(vals))}–{f.format(max(vals))}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke sizes, 1 rep")
    ap.add_argument("--py-sizes", action="store_true", help="core_bench uses bench_core.py's exact sizes")
    ap.add_argument("--penguiflow-src", default=str(HERE / "penguiflow-src"))
    ap.add_argument("--core-bench", default=str(ROOT / "build" / "bench" / "core_bench"))
    ap.add_argument("--out", default=str(HERE / "data" / "core_side_by_side.jsonl"),
                    help="appends one JSON line; the table goes to the same name with .txt")
    ap.add_argument("--cases", default="", help="comma list: only these cases (default: every case)")
    args = ap.parse_args()
    wanted = [c for c in args.cases.split(",") if c]
    unknown = [c for c in wanted if c not in SHARED_CASES + CPP_ONLY]
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    shared = [c for c in SHARED_CASES if not wanted or c in wanted]
    if not shared:
        print("--cases needs at least one case upstream runs too", file=sys.stderr)
        return 2
    cpp_only = [c for c in CPP_ONLY if not wanted or c in wanted]
    reps = 1 if args.quick and args.reps == 3 else args.reps

    probe = subprocess.run([sys.executable, "-c", "import pydantic; print(pydantic.VERSION)"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"python3 cannot import pydantic (upstream needs pydantic 2):\n{probe.stderr}", file=sys.stderr)
        return 2
    src = Path(args.penguiflow_src).resolve()
    if not (src / "penguiflow" / "__init__.py").exists():
        print(CHECKOUT_HELP.format(src=src), file=sys.stderr)
        return 2
    core_bench = Path(args.core_bench)
    if not os.access(core_bench, os.X_OK):
        print(f"{core_bench} is missing: scripts/build.sh core_bench", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="core-side-by-side-"))
    pydir = tmp / "penguiflow-py"
    shutil.copytree(PY_BENCH, pydir, ignore=shutil.ignore_patterns("data", "penguiflow-src", "__pycache__"))
    for d, _, files in os.walk(pydir):  # the source is read-only; its copy must not be
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    py_out, cpp_out = tmp / "py.jsonl", tmp / "cpp.jsonl"
    for rep in range(1, reps + 1):
        py_cmd = [sys.executable, str(pydir / "bench_core.py"), "--cases", ",".join(shared), "--reps", "1",
                  "--penguiflow-src", str(src), "--out", str(py_out)]
        cpp_cmd = [str(core_bench), "--cases", ",".join(shared + cpp_only), "--reps", "1", "--out", str(cpp_out)]
        if args.quick:
            py_cmd.append("--quick")
            cpp_cmd.append("--quick")
        if args.py_sizes:
            cpp_cmd.append("--py-sizes")
        for name, cmd in (("upstream", py_cmd), ("core_bench", cpp_cmd)):
            print(f"== rep {rep}/{reps}: {name}: {' '.join(cmd)}", flush=True)
            t0 = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            print(f"   {time.time() - t0:.0f} s, exit {proc.returncode}", flush=True)
            if proc.returncode != 0:
                print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
                return 1
    py, cpp = load(py_out), load(cpp_out)

    # ---------------------------------------------------------------- per-case table
    lines = []
    env_py = json.loads(next(line for line in (tmp / "py.jsonl").read_text().splitlines() if '"meta"' in line))
    env_cpp = json.loads(next(line for line in (tmp / "cpp.jsonl").read_text().splitlines() if '"meta"' in line))
    lines.append(f"upstream: PenguiFlow {env_py.get('penguiflow')} @ {str(env_py.get('penguiflow_commit'))[:12]}, "
                 f"Python {env_py.get('python')}, pydantic {env_py.get('pydantic')}")
    e = env_cpp.get("env", {})
    lines.append(f"ours:     core_bench, {e.get('compiler')}, Boost {e.get('boost')}, {e.get('build')}; "
                 f"{reps} rep(s){' (quick)' if args.quick else ''}{', py sizes' if args.py_sizes else ''}")
    lines.append("")
    hdr = f"{'case':22} | {'ours median [min–max]':34} | {'upstream median [min–max]':30} | {'ours/upstream':>13}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for case in shared:
        key = RATE[case]
        a, b = med(cpp, case, key), med(py, case, key)
        ratio = f"{a / b:,.1f}x" if a and b else "-"
        lines.append(f"{case:22} | {span(cpp, case, key):34} | {span(py, case, key):30} | {ratio:>13}")
    for case in ("roundtrip_seq", "roundtrip_conc"):
        for q in ("p50_us", "p99_us"):
            a, b = med(cpp, case, q), med(py, case, q)
            ratio = f"{b / a:,.1f}x" if a and b else "-"
            lines.append(f"{case + ' ' + q[:3] + ' µs':22} | {span(cpp, case, q):34} | {span(py, case, q):30} | "
                         f"{'(up/ours) ' + ratio:>13}")

    # ---------------------------------------------------------------- targets
    def ratio(case: str, key: str, invert: bool = False) -> float | None:
        a, b = med(cpp, case, key), med(py, case, key)
        if not a or not b:
            return None
        return b / a if invert else a / b

    hop_int, hop_base = med(cpp, "throughput_int", "hop_ns"), med(cpp, "baseline_handoff", "hop_ns")
    idle = med(cpp, "idle_flow", "idle_flow_bytes")
    targets = [
        ("chain plain (throughput_dict) msgs/s, ours/upstream", ratio("throughput_dict", "msgs_per_s"), ">=", 50.0, "x"),
        ("chain envelopes (throughput_message), ours/upstream", ratio("throughput_message", "msgs_per_s"), ">=", 100.0, "x"),
        ("flow-per-job (job_worker) jobs/s, ours/upstream", ratio("job_worker", "jobs_per_s"), ">=", 100.0, "x"),
        ("round-trip p99 sequential, upstream/ours", ratio("roundtrip_seq", "p99_us", True), ">=", 50.0, "x"),
        ("round-trip p99 100 concurrent, upstream/ours", ratio("roundtrip_conc", "p99_us", True), ">=", 50.0, "x"),
        ("hop through an edge / plain hand-off (int)", hop_int / hop_base if hop_int and hop_base else None, "<=", 3.0, "x"),
        ("idle 3-node flow, heap bytes", idle, "<", 65536.0, " B"),
    ]
    lines.append("")
    lines.append(f"{'target':54} | {'measured':>12} | {'target':>10} | verdict")
    lines.append("-" * 92)
    verdicts = {}
    for name, val, op, lim, unit in targets:
        if val is None:
            ok, shown = None, "-"
        else:
            ok = val >= lim if op == ">=" else val <= lim if op == "<=" else val < lim
            shown = f"{val:,.1f}{unit}" if unit == "x" else f"{val:,.0f}{unit}"
        verdicts[name] = {"value": val, "target": f"{op} {lim:g}{unit}", "met": ok}
        lines.append(f"{name:54} | {shown:>12} | {op + ' ' + format(lim, ',.0f') + unit:>10} | "
                     f"{'-' if ok is None else 'met' if ok else 'MISSED'}")
    lines.append("")
    hop_call = med(cpp, "baseline_call", "hop_ns")
    lines.append(f"per hop: flow edge (int) {hop_int or float('nan'):.1f} ns, plain hand-off {hop_base or float('nan'):.1f} ns, "
                 f"hand-off + identity co_await per node {hop_call or float('nan'):.1f} ns, "
                 f"flow edge (dict) {med(cpp, 'throughput_dict', 'hop_ns') or float('nan'):.1f} ns, "
                 f"flow edge (Message) {med(cpp, 'throughput_message', 'hop_ns') or float('nan'):.1f} ns")
    for r in cpp:
        if r.get("case") == "rss_10m" and "rss_at" in r:
            pts = ", ".join(f"{p['messages']:,}: {p['rss_mib']:.1f} MiB" for p in r["rss_at"])
            lines.append(f"RSS over {r['n']:,} envelopes: start {r['rss_start_mib']:.1f} MiB, {pts} "
                         f"(growth {r['rss_growth_mib']:+.2f} MiB)")
    oth_py = [r.get("others_cores") for r in py if "others_cores" in r]
    oth_cpp = [r.get("others_cores") for r in cpp if "others_cores" in r]
    if oth_py and oth_cpp:
        lines.append(f"background load (other processes' cores, median): during upstream {statistics.median(oth_py):.2f}, "
                     f"during ours {statistics.median(oth_cpp):.2f}")
    text = "\n".join(lines)
    print()
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        fh.write(json.dumps({"ts": time.time(), "reps": reps, "quick": args.quick, "py_sizes": args.py_sizes,
                             "targets": verdicts, "upstream": py, "ours": cpp}) + "\n")
    out.with_suffix(".txt").write_text(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
