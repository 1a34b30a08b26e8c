"""Slurm benchmarks (issue 12): submit-to-running latency and supervision overhead.

    .venv/bin/python bench/slurm.py [--pairs 6] [--work-s 4] [--cpus 1] [--latency 5]

Needs a Slurm whose jobs run on this machine's filesystem (``bash tests/slurm/cluster.sh
up`` brings up the single-node one the tests use).

1. Submit-to-running latency. ``--latency`` jobs each way: bare, ``sbatch --parsable
   --wrap 'sleep 2'`` polled with ``squeue`` every 0.05 s until RUNNING; supervised,
   ``Supervisor.launch`` of a ``launcher = "slurm"`` spec (pre-launch checks, the batch
   script, ``sbatch``) until the run's row says ``running``, which the supervisor writes
   when its ``poll_s`` query (0.5 s here; 2 s by default) sees RUNNING. Both include
   Slurm's own scheduling (the controller's scheduler runs on submit and then
   periodically).
2. Overhead. The CPU-bound reference job of ``bench/supervisor.py`` (a fixed amount of
   pure-Python work over ``--cpus`` worker processes, a metrics line every 0.25 s; it
   times its own work and writes ``work_s`` in its end line) with ``--cpus-per-task
   --cpus``, run bare (a batch script running ``srun python bench/supervisor.py --job
   overhead ...``) and supervised (``launcher = "slurm"``, defaults: the node agent
   sampling every 1 s, the supervisor asking ``scontrol`` every 2 s and tailing metrics
   on this same machine),
   alternated, bare first in odd pairs. The ratio is bare work time / supervised work
   time, median over the pairs (target >= 0.98). The node agent's own CPU time (its
   ``nodes/<node>.0.json``) per sample is printed too.

On a single-node test cluster the supervisor, the controller and the job share the same
CPUs, which a real cluster does not (the supervisor runs on a login node): with
``--cpus`` equal to the node's CPUs the job competes with all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parent.parent
_SUP = importlib.util.spec_from_file_location("bench_supervisor", ROOT / "bench" / "supervisor.py")
assert _SUP is not None and _SUP.loader is not None
sup_bench: Any = importlib.util.module_from_spec(_SUP)
_SUP.loader.exec_module(sup_bench)


def slurm(*argv: str) -> str:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()


def state_of(job_id: str) -> str:
    out = slurm("squeue", "-h", "-j", job_id, "-o", "%T")
    return out or "GONE"


def wait_state(job_id: str, states: tuple[str, ...], timeout: float = 120.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state_of(job_id) in states:
            return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} not {states} within {timeout:g} s")


def wait_gone(job_id: str) -> None:
    deadline = time.monotonic() + 300
    while state_of(job_id) != "GONE":
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still in the queue")
        time.sleep(0.2)


def spec_for(name: str, argv: list[str], cpus: int, *overrides: str) -> Any:
    from harness import RunSpec
    from harness.core import apply_overrides

    spec = RunSpec(name=name, command=argv, device="cpu", launcher="slurm")
    return apply_overrides(
        spec,
        [
            f"slurm.cpus_per_task={cpus}",
            "watch.min_util=0",
            "watch.min_ram_free_gb=0.2",
            *overrides,
        ],
    )


# -- 1. latency ------------------------------------------------------------------------------


async def latency(args: argparse.Namespace, tmp: Path) -> None:
    import mistakes as ml
    from harness import Supervisor
    from memory import Run

    bare: list[float] = []
    for _ in range(args.latency):
        t0 = time.monotonic()
        job = slurm("sbatch", "--parsable", f"--output={tmp}/lat-%j.out", "--wrap", "sleep 2")
        bare.append(wait_state(job.split(";")[0], ("RUNNING", "COMPLETING", "GONE")) - t0)
        wait_gone(job.split(";")[0])
    store = ml.open_log(tmp / "state-lat" / "harness.db")
    sup = Supervisor(store, tmp / "state-lat" / "runs")
    supervised: list[float] = []
    try:
        argv = [sys.executable, "-c", "import time; time.sleep(2)"]
        spec = spec_for("bench-latency", argv, 1, "slurm.poll_s=0.5")
        for _ in range(args.latency):
            t0 = time.monotonic()
            run_id = await sup.launch(spec, source="bench")
            while True:
                with store.read() as s:
                    row = s.get(Run, run_id)
                if row is not None and row.status in ("running", "succeeded", "failed"):
                    break
                await asyncio.sleep(0.05)
            supervised.append(time.monotonic() - t0)
            final = await sup.wait(run_id)
            if final.status != "succeeded":
                raise RuntimeError(f"latency job: {final.summary}")
    finally:
        await sup.close()
    print("### 1. Submit-to-running latency\n")
    print(f"Load before: {sup_bench.load()}.\n")
    print("| | runs | median s | min s | max s |")
    print("|---|---:|---:|---:|---:|")
    for label, values in (
        ("bare `sbatch` (squeue every 0.05 s)", bare),
        ("supervised", supervised),
    ):
        print(
            f"| {label} | {len(values)} | {sup_bench.median(values):.2f} | {min(values):.2f} "
            f"| {max(values):.2f} |"
        )
    print(
        "\nSupervised adds the pre-launch checks (the stale sweep, `sinfo`), writing the "
        "script, and up to one `poll_s` (0.5 s) before the supervisor sees RUNNING.\n"
    )


# -- 2. overhead -----------------------------------------------------------------------------


def bare_script(tmp: Path, i: int, argv: list[str], cpus: int) -> tuple[Path, Path]:
    run_dir = tmp / f"bare-{i}"
    run_dir.mkdir()
    metrics = run_dir / "metrics.jsonl"
    script = run_dir / "job.sbatch"
    words = " ".join(f"'{w}'" for w in argv)
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --cpus-per-task={cpus}\n#SBATCH --nodes=1\n#SBATCH --ntasks-per-node=1\n"
        f"export HARNESS_METRICS={metrics}\n"
        f"srun --output={run_dir}/stdout.log {words}\n"
    )
    return script, metrics


def work_s(metrics: Path) -> float:
    end = [r for r in sup_bench.read_metrics(metrics) if r.get("event") == "end"]
    if not end:
        raise RuntimeError(f"no end line in {metrics}")
    return float(end[-1]["work_s"])


async def overhead(args: argparse.Namespace, tmp: Path) -> None:
    import mistakes as ml
    from harness import Supervisor

    iters = sup_bench.calibrate(args.work_s)
    argv = [sys.executable, str(ROOT / "bench" / "supervisor.py"), "--job", "overhead"]
    argv += [str(iters * args.cpus), str(args.cpus)]
    store = ml.open_log(tmp / "state-ovh" / "harness.db")
    sup = Supervisor(store, tmp / "state-ovh" / "runs")
    spec = spec_for("bench-overhead", argv, args.cpus, "gates.score=>= 1")
    rows: list[tuple[int, float, float, float]] = []
    agent: list[tuple[float, float, int]] = []
    load_before = sup_bench.load()

    async def bare(i: int) -> float:
        script, metrics = bare_script(tmp, i, argv, args.cpus)
        out = slurm("sbatch", "--parsable", f"--output={script.parent}/slurm.out", str(script))
        await asyncio.to_thread(wait_gone, out.split(";")[0])
        return work_s(metrics)

    try:
        for i in range(1, args.pairs + 1):
            if i % 2:
                b = await bare(i)
            t0 = time.monotonic()
            run = await sup.wait(await sup.launch(spec, source="bench"))
            wall = time.monotonic() - t0
            if run.status != "succeeded":
                raise RuntimeError(f"supervised job: {run.summary}")
            s = work_s(Path(run.run_dir) / "metrics.jsonl")
            for note in (Path(run.run_dir) / "nodes").glob("*.0.json"):
                d = json.loads(note.read_text())
                agent.append((float(d["agent_cpu_s"]), float(d["startup_cpu_s"]), d["samples"]))
            if not i % 2:
                b = await bare(i)
            rows.append((i, b, s, wall))
    finally:
        await sup.close()
    ratios = [b / s for _, b, s, _ in rows]
    ratio = sup_bench.median(ratios)
    print(
        f"### 2. Supervision overhead on Slurm ({args.cpus} CPU job, cpus-per-task {args.cpus})\n"
    )
    print(f"Load before: {load_before}; after: {sup_bench.load()}.")
    print(
        f"Each run: {iters * args.cpus} iterations of pure-Python work over {args.cpus} "
        f"worker process(es) (about {args.work_s:g} s per worker on a free core).\n"
    )
    print("| pair | bare work s | supervised work s | ratio | supervised wall s |")
    print("|---:|---:|---:|---:|---:|")
    for n, b, s, w in rows:
        print(f"| {n} | {b:.3f} | {s:.3f} | {b / s:.3f} | {w:.2f} |")
    verdict = "meets" if ratio >= 0.98 else "BELOW"
    print(
        f"\n**Slurm throughput ratio (bare / supervised work time, median of {len(ratios)}): "
        f"{ratio:.3f}** ({verdict} the 0.98 target; min {min(ratios):.3f}, max {max(ratios):.3f})."
    )
    if agent:
        total = sup_bench.median([c for c, _, _ in agent])
        startup = sup_bench.median([s for _, s, _ in agent])
        samples = sum(n for _, _, n in agent)
        per = sum(c - s for c, s, _ in agent) / max(samples, 1)
        print(
            f"The node agent used a median {total:.3f} s of CPU per run: {startup:.3f} s to "
            f"start (the interpreter, psutil, NVML), then {per * 1000:.2f} ms per sample "
            f"({samples} samples over the runs, one a second).\n"
        )


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="harness-slurm-bench-", dir=args.tmp) as d:
        tmp = Path(d)
        os.chmod(tmp, 0o755)
        print(f"## Slurm benchmarks ({time.strftime('%Y-%m-%d %H:%M')})\n")
        if "latency" in args.only:
            await latency(args, tmp)
        if "overhead" in args.only:
            await overhead(args, tmp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--work-s", type=float, default=4.0)
    ap.add_argument("--cpus", type=int, default=1, help="the job's CPUs (cpus-per-task)")
    ap.add_argument("--latency", type=int, default=5, help="jobs per side for the latency")
    ap.add_argument("--only", nargs="+", default=["latency", "overhead"])
    ap.add_argument("--tmp", default=None, help="where the run dirs go (a shared filesystem)")
    args = ap.parse_args(argv)
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
