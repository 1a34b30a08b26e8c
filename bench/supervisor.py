"""Supervisor benchmarks (issue 3): supervision overhead and detection latency.

    .venv/bin/python bench/supervisor.py [--pairs 5] [--work-s 3] [--repeats 3]
        [--ddp-pairs 6] [--ddp-steps 100] [--only overhead detect torchrun]

1. Overhead. A CPU-bound reference job (stdlib: a fixed number of loop iterations split
   over 2 worker processes, a metrics line every 0.25 s through ``harness.report``) runs
   bare (a plain subprocess with HARNESS_METRICS pointing at a temp file) and under the
   harness (``Supervisor.launch`` + ``wait`` on this process's event loop: pre-launch
   checks, the exit-status wrapper, tailing every 0.2 s, psutil every 1 s, SQLite progress
   every 2 s), alternated bare, supervised, bare, ... The job times its own work; the
   throughput ratio is bare work time / supervised work time, median over the pairs
   (target >= 0.98). Also printed: wall time from launch to exit, and the CPU the
   supervisor itself used (this process, all threads) per second of supervised wall time,
   with a per-operation breakdown timed in isolation against a live reference job.
2. Detection latency. From the moment a condition starts (the NaN line written, the last
   metrics line written, the job going idle) to the moment the job is gone (the exit time
   the wrapper writes to ``exit.json``), against the configured bound.
3. torchrun overhead. The bundled trainer as 2 DDP ranks on CPU (gloo), a fixed number of
   steps without evaluation or checkpoints, run by plain ``torchrun --standalone
   --nproc-per-node 2 -m model.train ...`` and by the supervisor with ``launcher =
   "torchrun"`` (the wrapper, per-rank logs teed by torchrun, tailing, probes, SQLite),
   alternated (bare first in odd pairs, supervised first in even ones). The throughput
   ratio is bare training time / supervised training time, each from rank 0's own metrics
   (first ``train`` phase line to the last step line), median over the pairs (target
   >= 0.98).

The machine may be shared with other work: the load average is printed with each table.
The job modes (``--job overhead|nan|stall|idle``) are this same file run as a child.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

# Run as a script, this file's folder is sys.path[0] and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from harness.job import Reporter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REPORT_EVERY_S = 0.25


# -- the jobs (run as children of this file) -----------------------------------------------


def spin(iterations: int) -> float:
    """The unit of work: a pure-Python loop (the GIL makes processes, not threads, scale)."""
    x = 0.0
    for i in range(iterations):
        x += (i & 1023) * 0.5
    return x


def _worker(iterations: int) -> None:
    spin(iterations)


def job_overhead(iterations: int, workers: int) -> int:
    rep = Reporter()
    rep.start(total_steps=0, device="cpu")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(iterations // workers,)) for _ in range(workers)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    step = 0
    pending = {p.sentinel for p in procs}
    next_report = t0 + REPORT_EVERY_S
    while pending:  # wake at each report and at each worker's exit, so work_s is exact
        for done in wait(list(pending), timeout=max(next_report - time.perf_counter(), 0)):
            pending.discard(done)
        if time.perf_counter() >= next_report:
            step += 1
            rep.step(step, loss=1.0 / step, elapsed=time.perf_counter() - t0)
            next_report += REPORT_EVERY_S
    work_s = time.perf_counter() - t0
    for p in procs:
        p.join()
    rep.end(work_s=work_s, score=1.0)
    rep.close()
    return 0 if all(p.exitcode == 0 for p in procs) else 1


def job_detect(mode: str) -> int:
    """Healthy for a while, then the condition: NaN, silence, or idleness."""
    rep = Reporter()
    rep.start(total_steps=1000, device="cpu")
    ctx = mp.get_context("fork")
    busy_s = 3.0 if mode == "idle" else 1.0
    helper = None
    if mode == "idle":  # two busy cores until the job goes idle
        helper = ctx.Process(target=_spin_until, args=(time.time() + busy_s,))
        helper.start()
    t_end = time.time() + busy_s
    step = 0
    while time.time() < t_end:
        if mode == "idle":
            stop = time.time() + 0.1
            while time.time() < stop:
                spin(20_000)
        else:
            time.sleep(0.1)
        step += 1
        rep.step(step, loss=1.0 / step)
    if helper is not None:
        helper.join()
    onset = time.time()
    if mode == "nan":
        rep.step(step + 1, loss=float("nan"), onset=onset)
    elif mode == "stall":
        rep.step(step + 1, loss=0.1, onset=onset)
        time.sleep(60)
        return 0
    else:
        rep.step(step + 1, loss=0.1, onset=onset)
    deadline = time.time() + 60
    while time.time() < deadline:  # keeps reporting (no stall), sleeping (no CPU)
        time.sleep(0.1)
        step += 1
        rep.step(step, loss=0.1)
    return 0


def _spin_until(stop_at: float) -> None:
    while time.time() < stop_at:
        spin(20_000)


# -- helpers ------------------------------------------------------------------------------


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min, {os.cpu_count()} cores)"


def calibrate(work_s: float) -> int:
    """Iterations that take about ``work_s`` per worker on one core."""
    n = 300_000
    t0 = time.perf_counter()
    spin(n)
    rate = n / max(time.perf_counter() - t0, 1e-6)
    return int(rate * work_s)


def job_argv(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--job", *args]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def end_value(path: Path, key: str) -> float:
    for rec in reversed(read_metrics(path)):
        if rec.get("event") == "end":
            return float(rec[key])
    raise RuntimeError(f"{path}: no end event")


def cpu_self_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- 1. overhead --------------------------------------------------------------------------


async def run_bare(argv: list[str], tmp: Path, i: int) -> tuple[float, float]:
    run_dir = tmp / f"bare-{i}"
    run_dir.mkdir()
    env = dict(os.environ, HARNESS_METRICS=str(run_dir / "metrics.jsonl"), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    code = await asyncio.to_thread(proc.wait)
    wall = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"bare job exited {code}")
    return end_value(run_dir / "metrics.jsonl", "work_s"), wall


async def run_supervised(sup: Any, spec: Any) -> tuple[float, float, float, float, str]:
    """(work s, wall s, launch CPU s, watch CPU share of a core, run id)."""
    t0, c0 = time.perf_counter(), cpu_self_s()
    run_id = await sup.launch(spec, source="bench")
    t1, c1 = time.perf_counter(), cpu_self_s()
    run = await sup.wait(run_id)
    t2, c2 = time.perf_counter(), cpu_self_s()
    if run.status != "succeeded":
        raise RuntimeError(f"supervised job: {run.summary}")
    work = end_value(Path(run.run_dir) / "metrics.jsonl", "work_s")
    return work, t2 - t0, c1 - c0, (c2 - c1) / (t2 - t1), run_id


def make_spec(name: str, argv: list[str], *overrides: str) -> Any:
    from harness import RunSpec
    from harness.core import apply_overrides

    spec = RunSpec(name=name, command=argv, device="cpu")
    return apply_overrides(spec, ["watch.min_ram_free_gb=0.2", *overrides])


async def overhead(args: argparse.Namespace, tmp: Path) -> None:
    import mistakes as ml
    from harness import Supervisor

    store = ml.open_log(tmp / "state" / "harness.db")
    sup = Supervisor(store, tmp / "state" / "runs")
    iterations = calibrate(args.work_s) * 2
    argv = job_argv("overhead", str(iterations), "2")
    # min_util 0: a shared machine must not get the reference job aborted mid-measurement.
    spec = make_spec("bench-overhead", argv, "watch.min_util=0", "gates.score=>= 1")
    load_before = load()
    rows = []
    ratios = []
    sup_cpu_share = []
    launch_cpus = []
    last_run = ""
    try:
        for i in range(args.pairs):
            bare_work, bare_wall = await run_bare(argv, tmp, i)
            sup_work, sup_wall, launch_cpu, share, last_run = await run_supervised(sup, spec)
            ratios.append(bare_work / sup_work)
            sup_cpu_share.append(share)
            launch_cpus.append(launch_cpu)
            rows.append((i + 1, bare_work, sup_work, bare_wall, sup_wall, launch_cpu, share))
        breakdown = await asyncio.to_thread(op_costs, sup, store, last_run, argv, tmp)
    finally:
        await sup.close()
    print("### 1. Supervision overhead (CPU-bound reference job, 2 worker processes)\n")
    print(f"Load before: {load_before}; after: {load()}.")
    print(
        f"Work per run: {iterations:,} loop iterations over 2 processes "
        f"(about {args.work_s:g} s on an idle core each); a metrics line every "
        f"{REPORT_EVERY_S:g} s.\n"
    )
    print(
        "| pair | bare work s | supervised work s | ratio | bare wall s | supervised wall s "
        "| launch CPU s | watch CPU |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, bw, sw, bwall, swall, lcpu, share in rows:
        print(
            f"| {n} | {bw:.3f} | {sw:.3f} | {bw / sw:.3f} | {bwall:.3f} | {swall:.3f} "
            f"| {lcpu:.3f} | {share * 100:.1f} % of a core |"
        )
    ratio = median(ratios)
    ncores = os.cpu_count() or 1
    verdict = "meets" if ratio >= 0.98 else "BELOW"
    if max(ratios) - min(ratios) > 0.05:  # other work on the machine swamps a 1 % effect
        verdict = (
            f"NOT MEANINGFUL: per-pair ratios span {max(ratios) - min(ratios):.2f}, "
            "so the machine's other load decides them; judge by the CPU accounting below"
        )
    print(
        f"\n**Throughput ratio (bare / supervised work time, median of {len(ratios)}): "
        f"{ratio:.3f}** ({verdict}; target 0.98; min {min(ratios):.3f}, "
        f"max {max(ratios):.3f}). Supervisor CPU while watching, median: "
        f"{median(sup_cpu_share) * 100:.1f} % of one core; launch (checks, database, "
        f"spawn), median: {median(launch_cpus):.3f} CPU s per run. On {ncores} cores that "
        f"is {median(sup_cpu_share) / ncores * 100:.2f} % of the machine, so the ratio "
        f"expected from CPU accounting alone is {1 - median(sup_cpu_share) / ncores:.3f}; "
        "per-pair ratios vary far more than that on a loaded machine.\n"
    )
    print("Supervisor cost per operation (timed in isolation against a live reference job):\n")
    print("| operation | every | mean ms per call | CPU ms per call | CPU % of a core |")
    print("|---|---:|---:|---:|---:|")
    total = 0.0
    for name, every, wall_ms, cpu_ms in breakdown:
        share = cpu_ms / 1000 / every
        total += share
        print(f"| {name} | {every:g} s | {wall_ms:.3f} | {cpu_ms:.3f} | {share * 100:.2f} % |")
    print(f"| **total** | | | | **{total * 100:.2f} %** |\n")


def op_costs(
    sup: Any, store: Any, run_id: str, argv: list[str], tmp: Path
) -> list[tuple[str, float, float, float]]:
    """Wall and CPU time of each recurring operation of the watch loop, called directly."""
    from harness.core import MetricLines, ProbeSample, RunMachine
    from harness.runtime import (
        PROGRESS_EVERY_S,
        TAIL_EVERY_S,
        CpuProbe,
        MetricsTail,
        process_tree,
        read_ram,
    )

    run_dir = tmp / "ops"
    run_dir.mkdir()
    metrics = run_dir / "metrics.jsonl"
    env = dict(os.environ, HARNESS_METRICS=str(metrics))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    spec = make_spec("bench-ops", argv)
    machine = RunMachine(spec, started_at=time.monotonic())
    tail = MetricsTail(metrics)
    cpu = CpuProbe(lambda: process_tree(proc.pid))

    def timed(fn: Any, n: int, pause: float = 0.0) -> tuple[float, float]:
        wall = cpu_t = 0.0
        for _ in range(n):
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            cpu_t += time.thread_time() - c0
            wall += time.perf_counter() - w0
            if pause:
                time.sleep(pause)
        return wall / n * 1000, cpu_t / n * 1000

    def tail_and_feed() -> None:
        batch = tail.read_new()
        machine.handle(MetricLines(time.monotonic(), batch.records))

    def sample() -> None:
        c = cpu.sample()
        ram = read_ram()
        machine.handle(ProbeSample(time.monotonic(), c.util, ram.available_bytes))

    out = []
    try:
        out.append(("tail metrics.jsonl + machine", TAIL_EVERY_S, *timed(tail_and_feed, 20, 0.1)))
        out.append(("exit check (Popen.poll)", TAIL_EVERY_S, *timed(proc.poll, 200)))
        out.append(("psutil tree + RAM sample", 1.0, *timed(sample, 20, 0.05)))
        out.append(
            ("abort-request read (SQLite)", 0.5, *timed(lambda: sup._abort_request(run_id), 50))
        )
        out.append(
            (
                "progress write (SQLite)",
                PROGRESS_EVERY_S,
                *timed(lambda: sup._save_progress(run_id, machine), 20),
            )
        )
    finally:
        proc.kill()
        proc.wait()
    return out


# -- 2. detection latency -----------------------------------------------------------------


async def detection(args: argparse.Namespace, tmp: Path) -> None:
    import mistakes as ml
    from harness import Supervisor
    from harness.runtime import TAIL_EVERY_S

    store = ml.open_log(tmp / "state-detect" / "harness.db")
    sup = Supervisor(store, tmp / "state-detect" / "runs")
    common = ["watch.int_grace_s=5", "watch.sample_every_s=1"]
    cases = [
        (
            "NaN loss",
            "nan",
            ["watch.min_util=0", "watch.stall_s=30"],
            TAIL_EVERY_S,
            f"one tail poll, {TAIL_EVERY_S:g} s",
        ),
        (
            "stall",
            "stall",
            ["watch.min_util=0", "watch.stall_s=3"],
            3 + 2 * TAIL_EVERY_S,
            f"stall_s 3 + 2 polls of {TAIL_EVERY_S:g} s",
        ),
        (
            "low utilisation",
            "idle",
            [
                "watch.min_util=0.25",
                "watch.util_grace_s=2",
                "watch.util_window_s=3",
                "watch.stall_s=30",
            ],
            3 + 1.0 + TAIL_EVERY_S,
            f"window 3 + sample 1 + poll {TAIL_EVERY_S:g} s; grace 2 s, min_util 25 %",
        ),
    ]
    load_before = load()
    rows = []
    try:
        for label, mode, overrides, bound, bound_text in cases:
            spec = make_spec(f"bench-{mode}", job_argv(mode), *common, *overrides)
            lat, detected = [], []
            statuses = []
            for _ in range(args.repeats):
                run_id = await sup.launch(spec, source="bench")
                run = await sup.wait(run_id)
                statuses.append(run.summary)
                run_dir = Path(run.run_dir)
                onset = next(
                    r["onset"] for r in read_metrics(run_dir / "metrics.jsonl") if "onset" in r
                )
                gone = json.loads((run_dir / "exit.json").read_text())["t"]
                lat.append(gone - onset)
                with store.read() as s:
                    found = ml.list_incidents(session=s, run_id=run_id)
                detected.append(min(i.ts for i in found) - onset)
            rows.append((label, bound, bound_text, detected, lat, statuses))
    finally:
        await sup.close()
    print("### 2. Detection latency (condition starts -> job process gone)\n")
    print(f"Load before: {load_before}; after: {load()}. {args.repeats} runs each.\n")
    print(
        "| condition | detection bound | detected (incident), median / max s "
        "| job gone (exit), median / max s | verdict (first run) |"
    )
    print("|---|---|---:|---:|---|")
    for label, bound, text, det, lat, seen in rows:
        print(
            f"| {label} | {bound:.1f} s ({text}) | {median(det):.2f} / {max(det):.2f} "
            f"| {median(lat):.2f} / {max(lat):.2f} | {seen[0]} |"
        )
    print(
        "\nDetected: the incident's timestamp. Job gone: the exit time the wrapper writes, so "
        "it adds the job's own exit after SIGINT (a Python job raises KeyboardInterrupt) "
        "on top of detection. The utilisation rule "
        "decides on the mean over the window, so it can fire before the whole window is "
        "idle when the busy part read low (a loaded machine).\n"
    )


# -- 3. torchrun overhead -------------------------------------------------------------------


def ddp_args(steps: int, data: Path) -> list[str]:
    """The trainer's arguments: training only (no evaluation or checkpoint in the timing)."""
    args = ["--task", "echo", "--steps", str(steps), "--batch", "128", "--log-every", "10"]
    return [*args, "--eval-every", "0", "--checkpoint-every", "0", "--data-dir", str(data)]


def train_s(metrics: Path) -> float:
    """Rank 0's training time: from its first ``train`` phase line to its last step line."""
    lines = read_metrics(metrics)
    start = next(r["t"] for r in lines if r.get("phase") == "train")
    return float([r["t"] for r in lines if "loss" in r and "step" in r][-1] - start)


async def run_bare_torchrun(args: list[str], tmp: Path, i: int) -> tuple[float, float]:
    run_dir = tmp / f"ddp-bare-{i}"
    run_dir.mkdir()
    env = dict(os.environ, HARNESS_METRICS=str(run_dir / "metrics.jsonl"), PYTHONUNBUFFERED="1")
    env = {k: v for k, v in env.items() if k not in ("HARNESS_RUN_ID", "HARNESS_RUN_DIR")}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    argv += ["2", "-m", "model.train", *args, "--out", str(run_dir)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    code = await asyncio.to_thread(proc.wait)
    wall = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"bare torchrun job exited {code}")
    return train_s(run_dir / "metrics.jsonl"), wall


async def torchrun_overhead(args: argparse.Namespace, tmp: Path) -> None:
    import mistakes as ml
    from harness import Supervisor

    store = ml.open_log(tmp / "state-ddp" / "harness.db")
    sup = Supervisor(store, tmp / "state-ddp" / "runs")
    train = ddp_args(args.ddp_steps, tmp / "ddp-data")
    command = [sys.executable, "-m", "model.train", *train]
    spec = make_spec(
        "bench-ddp",
        command,
        "launcher=torchrun",
        "torchrun.nproc_per_node=2",
        "watch.min_util=0",
        "gates.steps=>= 1",
        f"cwd={ROOT}",
    )
    load_before = load()
    rows, ratios, shares = [], [], []
    try:
        await run_bare_torchrun(train, tmp, 0)  # generates the data; not measured
        for i in range(1, args.ddp_pairs + 1):
            if i % 2:  # the order alternates, so neither side always runs on a warmer machine
                bare_train, bare_wall = await run_bare_torchrun(train, tmp, i)
            t0, c0 = time.perf_counter(), cpu_self_s()
            run = await sup.wait(await sup.launch(spec, source="bench"))
            sup_wall = time.perf_counter() - t0
            shares.append((cpu_self_s() - c0) / sup_wall)
            if run.status != "succeeded":
                raise RuntimeError(f"supervised torchrun job: {run.summary}")
            sup_train = train_s(Path(run.run_dir) / "metrics.jsonl")
            if not i % 2:
                bare_train, bare_wall = await run_bare_torchrun(train, tmp, i)
            ratios.append(bare_train / sup_train)
            rows.append((i, bare_train, sup_train, bare_wall, sup_wall))
    finally:
        await sup.close()
    print("### 3. torchrun overhead (the bundled trainer, 2 DDP ranks on CPU, gloo)\n")
    print(f"Load before: {load_before}; after: {load()}.")
    print(
        f"Each run: {args.ddp_steps} steps of `echo` at batch 128 per rank, no evaluation or "
        "checkpoint; bare is plain `torchrun --standalone --nproc-per-node 2 -m model.train`, "
        'supervised is `launcher = "torchrun"` through `Supervisor.launch` (no preflight).\n'
    )
    print("| pair | bare train s | supervised train s | ratio | bare wall s | supervised wall s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, bt, st, bw, sw in rows:
        print(f"| {n} | {bt:.3f} | {st:.3f} | {bt / st:.3f} | {bw:.3f} | {sw:.3f} |")
    ratio, share = median(ratios), median(shares)
    ncores = os.cpu_count() or 1
    verdict = "meets" if ratio >= 0.98 else "BELOW"
    if max(ratios) - min(ratios) > 0.05:
        verdict = (
            f"NOT MEANINGFUL: per-pair ratios span {max(ratios) - min(ratios):.2f}, "
            "so the machine's other load decides them; judge by the CPU accounting"
        )
    print(
        f"\n**torchrun throughput ratio (bare / supervised training time, median of "
        f"{len(ratios)}): {ratio:.3f}** ({verdict}; target 0.98; min {min(ratios):.3f}, "
        f"max {max(ratios):.3f}). The supervisor used a median {share * 100:.1f} % of one "
        f"core (launch included) while a run lasted, {share / ncores * 100:.2f} % of the "
        f"machine: the ratio expected from CPU accounting alone is {1 - share / ncores:.3f}. "
        "Wall time adds the interpreters' start (3 imports of torch and the rendezvous) to "
        "both, and the database and the wrapper to the supervised run.\n"
    )


# -- main ---------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as d:
        tmp = Path(d)
        print(f"## Supervisor benchmarks ({time.strftime('%Y-%m-%d %H:%M')})\n")
        if "overhead" in args.only:
            await overhead(args, tmp)
        if "detect" in args.only:
            await detection(args, tmp)
        if "torchrun" in args.only:
            await torchrun_overhead(args, tmp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--work-s", type=float, default=3.0, help="seconds of work per worker")
    ap.add_argument("--repeats", type=int, default=3, help="runs per detection case")
    ap.add_argument("--only", nargs="+", default=["overhead", "detect", "torchrun"])
    ap.add_argument("--ddp-pairs", type=int, default=6, help="torchrun pairs (bare, supervised)")
    ap.add_argument("--ddp-steps", type=int, default=100, help="training steps per torchrun run")
    ap.add_argument("--job", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.job:
        mode, *rest = args.job
        if mode == "overhead":
            return job_overhead(int(rest[0]), int(rest[1]))
        return job_detect(mode)
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
