"""Mistake-log benchmark: search latency and import time on a realistic volume.

    .venv/bin/python bench/mistakes.py [--incidents 10000] [--mistakes 500] [--queries 400]

Builds a fresh SQLite file with 500 mistakes and 10,000 incidents, then times full-text
searches (the same code path as ``harness mistakes search``: safe query building, both
tables, bm25 ranking) with a mix of one-word, multi-word, prefix, id and hostile
queries, and the import of a generated 1,000-entry MISTAKES.md. Prints a markdown table.
Target (issue 2): search p99 under 20 ms on a 2-core machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder is sys.path[0] and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import mistakes as ml  # noqa: E402

WORDS = (
    "gpu utilisation cpu dataloader memory ram oom killer nan loss gradient stall heartbeat "
    "checkpoint learning rate schedule warmup tokenizer truncation context eval leakage seed "
    "determinism disk quota process listener zombie torchrun rank nccl timeout bf16 overflow "
    "cuda kernel batch throughput latency pipeline prefetch pinned shard metric gate accuracy"
).split()
QUERIES = [
    "gpu",
    "nan loss",
    "util",
    "memory oom killer",
    "util AND (",
    "M-015",
    '"quoted',
    "checkpoint -resume",
    "ünïcode ☃",
    "stall heartbeat",
    "threshold 80",
    "dataloader pinned prefetch",
]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def generate_markdown(n: int, seed: int = 1, first_id: int = 1) -> str:
    rng = random.Random(seed)
    lines = ["# Mistakes", "", "## Prevention Checklist", ""]
    for k in range(20):
        lines.append(f"- [ ] **Check {k}:** {_sentence(rng, 8)} (M-{first_id + k:03d})")
    sections = ["GPU", "Memory", "Data", "Processes", "Evaluation", "Optimisation"]
    for s_i, section in enumerate(sections):
        lines += ["", f"## Category: {section}", ""]
        for k in range(s_i, n, len(sections)):
            lines += [f"### M-{first_id + k:03d}: {_sentence(rng, 6)}", ""]
            for field in ("When", "Symptom", "Root cause", "Fix", "Prevention"):
                lines += [f"**{field}:** {_sentence(rng, 14)}", ""]
            if k % 5 == 0:
                lines += [f"**Cost:** {rng.randint(1, 40)} GPU hours", ""]
                lines += ["**Evidence:**", f"- {_sentence(rng, 6)}", f"- {_sentence(rng, 5)}", ""]
    return "\n".join(lines) + "\n"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--incidents", type=int, default=10_000)
    ap.add_argument("--mistakes", type=int, default=500)
    ap.add_argument("--queries", type=int, default=400)
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        store = ml.open_log(Path(tmp) / "bench.db")
        t0 = time.perf_counter()
        ml.import_markdown(store, generate_markdown(args.mistakes, first_id=100))
        fill_mistakes = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids = [f"M-{100 + k:03d}" for k in range(args.mistakes)]
        for chunk in range(0, args.incidents, 500):
            with store.write() as s:
                for n in range(chunk, min(chunk + 500, args.incidents)):
                    ml.record_incident(
                        session=s,
                        rule=rng.choice(["utilisation", "stall", "nonfinite", "ram_headroom"]),
                        summary=f"{_sentence(rng, 7)} value {rng.random():.3f}",
                        run_id=f"run-{n // 50}",
                        mistake_id=rng.choice(ids),
                        severity="abort",
                        evidence={"util": round(rng.random(), 3), "window_s": 30},
                    )
        fill_incidents = time.perf_counter() - t0

        latencies: list[float] = []
        with store.read() as s:
            for q in QUERIES:  # warm-up
                ml.search(session=s, query=q)
            for k in range(args.queries):
                q = QUERIES[k % len(QUERIES)]
                t0 = time.perf_counter()
                ml.search(session=s, query=q, limit=20)
                latencies.append((time.perf_counter() - t0) * 1000)

        big = generate_markdown(1000, seed=3, first_id=5000)
        with ml.open_log(Path(tmp) / "import.db") as fresh:
            t0 = time.perf_counter()
            report = ml.import_markdown(fresh, big)
            import_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ml.import_markdown(fresh, big)  # every entry exists: the upsert path
            reimport_s = time.perf_counter() - t0
        store.close()

    help_s = []
    exe = Path(sys.executable).with_name("harness")
    for _ in range(10):
        t0 = time.perf_counter()
        subprocess.run([str(exe), "--help"], capture_output=True, check=True)
        help_s.append(time.perf_counter() - t0)

    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(
        f"setup: {args.mistakes} mistakes in {fill_mistakes:.2f} s, "
        f"{args.incidents} incidents in {fill_incidents:.2f} s"
    )
    print()
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| search p50 ({args.queries} queries, {len(QUERIES)} kinds) | {p50:.2f} ms | |")
    print(f"| search p99 | {p99:.2f} ms | < 20 ms |")
    print(f"| search max | {max(latencies):.2f} ms | |")
    print(f"| mean | {statistics.mean(latencies):.2f} ms | |")
    print(f"| import 1,000-entry file (new) | {import_s:.2f} s ({len(report.added)} added) | |")
    print(f"| re-import same file (upsert) | {reimport_s:.2f} s | |")
    print(
        f"| `harness --help` wall time, median of 10 | {statistics.median(help_s) * 1000:.0f} ms"
        f" | < 300 ms |"
    )


if __name__ == "__main__":
    main()
