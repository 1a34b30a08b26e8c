"""Diagnosis benchmarks (issue 13): detector cost per line, and ``harness diagnose`` on a
1,000,000-line metrics file.

    .venv/bin/python bench/diagnose.py [--lines 1000000] [--repeats 3]

1. Detector cost. Every detector together (``Detectors.feed``), on already-parsed lines:
   a healthy run of 200,000 step lines shaped like the bundled trainer's (loss, lr,
   grad_norm, samples_per_s, fwd_ms, t; an eval line with an accuracy every 50 steps,
   a checkpoint event every 1,000), and each trace of the labelled corpus replayed.
   Median of ``--repeats`` passes, in microseconds per line (target < 10 us).
2. ``harness diagnose FILE --json`` as a subprocess on a file of ``--lines`` lines of the
   same shape (about 140 bytes each): wall time, interpreter start included (target
   < 10 s), and what the JSON parsing alone costs on the same file.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from harness.core import Detectors  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "diagnosis" / "corpus"


def healthy(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = [{"event": "start", "total_steps": n, "device": "cpu", "t": 0.0}]
    t = 0.0
    for step in range(1, n + 1):
        t += 0.05 + rng.random() * 0.01
        loss = 2.0 * math.exp(-step / (n / 5)) + 0.2 + rng.gauss(0, 0.01)
        out.append(
            {
                "step": step,
                "loss": loss,
                "lr": 1e-3 * min(1.0, step / 100),
                "grad_norm": 0.5 + rng.random() * 0.2,
                "samples_per_s": 1500 + rng.gauss(0, 20),
                "fwd_ms": 20 + rng.random(),
                "t": t,
            }
        )
        if step % 50 == 0:
            acc = 0.93 - 0.4 * math.exp(-step / (n / 10)) + rng.gauss(0, 0.002)
            out.append({"step": step, "avg_bit_acc": acc, "ceiling": 0.9375, "t": t})
        if step % 1000 == 0:
            out.append({"event": "checkpoint", "path": f"/c/step-{step}.pt", "step": step, "t": t})
    return out


def per_line_us(records: list[dict[str, Any]], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        d = Detectors()
        feed = d.feed
        t0 = time.perf_counter()
        for rec in records:
            feed(rec)
        d.close()
        runs.append((time.perf_counter() - t0) / len(records) * 1e6)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"## Diagnosis benchmarks ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print("### 1. Detector cost per line (all detectors together, parsed lines)\n")
    print("| stream | lines | us per line |")
    print("|---|---:|---:|")
    run = healthy(200_000)
    print(f"| healthy, trainer-shaped | {len(run):,} | {per_line_us(run, args.repeats):.2f} |")
    corpus: list[list[dict[str, Any]]] = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        corpus.append([json.loads(x) for x in path.read_text().splitlines() if x.strip()])
    total = sum(len(c) for c in corpus)
    t_all = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for records in corpus:
            d = Detectors()
            for rec in records:
                d.feed(rec)
            d.close()
        t_all.append((time.perf_counter() - t0) / total * 1e6)
    per = statistics.median(t_all)
    print(f"| the labelled corpus, {len(corpus)} traces | {total:,} | {per:.2f} |")
    print("\nTarget: < 10 us per line.\n")

    with tempfile.TemporaryDirectory(prefix="harness-diag-bench-") as d:
        path = Path(d) / "metrics.jsonl"
        steps = int(args.lines / 1.021)  # eval lines every 50 steps, a checkpoint every 1,000
        with path.open("w") as f:
            for rec in healthy(steps, seed=1):
                f.write(json.dumps(rec) + "\n")
        lines = sum(1 for _ in path.open("rb"))
        size = path.stat().st_size
        t0 = time.perf_counter()
        with path.open("rb") as f:
            for line in f:
                json.loads(line)
        parse = time.perf_counter() - t0
        t0 = time.perf_counter()
        with path.open("rb") as f:
            batch: list[bytes] = []
            for line in f:
                batch.append(line)
                if len(batch) == 1024:
                    json.loads(b"[" + b",".join(batch) + b"]")
                    batch = []
            if batch:
                json.loads(b"[" + b",".join(batch) + b"]")
        batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "harness", "diagnose", str(path), "--json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"harness diagnose failed: {p.stderr[-500:]}")
        verdict = json.loads(p.stdout)["verdict"]
    print(f"### 2. `harness diagnose` on a {lines:,}-line file ({size / 1e6:.0f} MB)\n")
    print("| measure | s |")
    print("|---|---:|")
    print(f"| `harness diagnose FILE --json`, wall, interpreter start included | **{wall:.2f}** |")
    print(f"| JSON parsing alone, in batches of 1,024 lines as the command does | {batched:.2f} |")
    print(f"| JSON parsing alone, line by line (for comparison) | {parse:.2f} |")
    print(f"\nVerdict: {verdict} (the file is a healthy run). Target: < 10 s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
