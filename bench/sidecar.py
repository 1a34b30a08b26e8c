"""Sidecar and daemon benchmarks: /send throughput and latency, idle RSS, heartbeat punctuality.

1. POST /send throughput and latency against the real sidecar app, with a real SQLite file.

The app runs in a child process (as under ``harness serve``) with no Discord configured,
so the delivery worker is off and every 202 means "stored". 32 concurrent clients post
for 10 s; afterwards the bench checks that the outbox holds exactly one row per 202.

2. The resident memory of a real ``harness serve`` when idle (bot disabled, no Discord).
3. Heartbeat punctuality: 100 heartbeats of the real service at a short interval; the
   largest lateness against the scheduler's own timetable.

    .venv/bin/python bench/sidecar.py [--seconds 10] [--clients 32] [--beats 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder is sys.path[0] and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import aiohttp  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdef"


async def _serve(db: Path, port: int) -> None:
    from mistakes import open_log
    from sidecar import create_app, serve

    store = open_log(db)
    runner = await serve(create_app(store=store, token=TOKEN), port=port)
    print(f"ready {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


async def _client(
    http: aiohttp.ClientSession, url: str, stop_at: float, latencies: list[float], n: int
) -> int:
    errors = 0
    i = 0
    while time.perf_counter() < stop_at:
        body = {"text": f"client {n} message {i}: loss 0.123 step 4567/10000"}
        t0 = time.perf_counter()
        async with http.post(url, json=body) as response:
            await response.read()
            ok = response.status == 202
        latencies.append(time.perf_counter() - t0)
        errors += not ok
        i += 1
    return errors


async def _load(port: int, seconds: float, clients: int) -> tuple[list[float], int, float]:
    url = f"http://127.0.0.1:{port}/send"
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        start = time.perf_counter()
        stop_at = start + seconds
        errors = await asyncio.gather(
            *(_client(http, url, stop_at, latencies, n) for n in range(clients))
        )
        elapsed = time.perf_counter() - start
    return latencies, sum(errors), elapsed


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stored_rows(db: Path) -> int:
    from memory import open_store
    from sidecar import count_by_state

    with open_store(db) as store, store.read() as session:
        return sum(count_by_state(session=session).values())


def idle_rss(settle_s: float = 8.0) -> tuple[float, float]:
    """(RSS MiB, USS MiB) of an idle ``harness serve`` after it has settled."""
    import psutil

    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HARNESS_HOME": home, "PYTHONPATH": str(ROOT)}
        env.pop("HARNESS_DISCORD_TOKEN", None)
        env.pop("HARNESS_DISCORD_WEBHOOK_URL", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "serve", "--port", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(settle_s)
            info = psutil.Process(proc.pid).memory_full_info()
            return info.rss / 2**20, info.uss / 2**20
        finally:
            proc.terminate()
            proc.wait(timeout=30)


async def _punctuality(beats: int, interval: float) -> tuple[list[float], int]:
    from harness.daemon import Service, load_settings
    from mistakes import open_log

    with tempfile.TemporaryDirectory() as home:
        store = open_log(Path(home) / "harness.db")
        flags = {
            "heartbeat.interval_s": (interval, "--heartbeat"),
            "heartbeat.misfire_grace_s": (1, "bench"),
        }
        service = Service(load_settings({"HARNESS_HOME": home}, flags=flags), store)
        done: list[float] = []
        original = service.heartbeat

        async def timed() -> object:
            done.append(time.time())  # the moment the scheduled job starts running
            return await original()

        service.heartbeat = timed  # type: ignore[method-assign]
        await service.start()
        job = service.scheduler.get_job("heartbeat")
        anchor = job.next_run_time.timestamp()
        while len(done) < beats:
            await asyncio.sleep(interval)
        await service.stop()
        store.close()
    lateness = [t - (anchor + k * interval) for k, t in enumerate(done[:beats])]
    skipped = round((done[beats - 1] - anchor) / interval) - (beats - 1)
    return lateness, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--beats", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--serve", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(Path(args.serve), 0))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "harness.db"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(db)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line.startswith("ready "):
                raise SystemExit(f"server did not start: {line!r}")
            port = int(line.split()[1])
            server_cpu0, client_cpu0 = _cpu_seconds(server.pid), time.process_time()
            latencies, errors, elapsed = asyncio.run(_load(port, args.seconds, args.clients))
            server_cpu = (_cpu_seconds(server.pid) - server_cpu0) / elapsed
            client_cpu = (time.process_time() - client_cpu0) / elapsed
        finally:
            server.terminate()
            server.wait(timeout=10)
        stored = _stored_rows(db)

    n = len(latencies)
    ms = sorted(x * 1000 for x in latencies)
    p50 = statistics.median(ms)
    p99 = ms[min(int(n * 0.99), n - 1)]
    load = Path("/proc/loadavg").read_text().split()[0]
    print(
        f"POST /send, {args.clients} clients, {elapsed:.1f} s, {os.cpu_count()} CPUs, "
        f"load average {load} (other work on the machine slows both sides)\n"
    )
    print(
        "| requests | errors | req/s | p50 ms | p99 ms | max ms | rows stored "
        "| CPU server | CPU client | server CPU per request |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {n} | {errors} | {n / elapsed:,.0f} | {p50:.1f} | {p99:.1f} | {ms[-1]:.1f} "
        f"| {stored} | {server_cpu:.0%} | {client_cpu:.0%} "
        f"| {server_cpu * elapsed / max(n, 1) * 1e6:.0f} µs |"
    )
    if stored != n - errors:
        print(f"\nMISMATCH: {n - errors} answered 202 but {stored} rows stored")
        return 1

    rss, uss = idle_rss()
    print(
        f"\nIdle `harness serve` (bot disabled, no Discord): RSS {rss:.0f} MiB, "
        f"USS {uss:.0f} MiB (target: under 120 MB)"
    )
    lateness, skipped = asyncio.run(_punctuality(args.beats, args.interval))
    late_ms = sorted(x * 1000 for x in lateness)
    print(
        f"\nHeartbeat punctuality: {args.beats} heartbeats every {args.interval:g} s: "
        f"median lateness {statistics.median(late_ms):.1f} ms, "
        f"max {late_ms[-1]:.1f} ms, skipped {skipped} (target: max under 1 s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
