"""Probes: CPU of real process trees, RAM from fake cgroup trees, GPU through a fake NVML."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import psutil
import pynvml
import pytest

from harness.runtime import probes as probes_package
from harness.runtime.probes import (
    CpuProbe,
    CpuSample,
    DeviceSample,
    GpuProbe,
    GpuSample,
    RamSample,
    process_tree,
    read_ram,
)
from tests.fakes.nvml import FakeNvml

MiB = 1024**2
GiB = 1024**3
NCORES = psutil.cpu_count() or 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
INTERVAL_S = 1.0
# A busy loop gets a full core on an idle machine; other work on a shared 2-core machine
# can take most of it, so "busy" is asserted loosely and the exact figure against /proc.
MIN_BUSY = 0.15
TOLERANCE = 0.05

BUSY = "print('ready', flush=True)\nwhile True: pass"
SLEEPY = "import time\nprint('ready', flush=True)\ntime.sleep(60)"
WAIT_STDIN = "import sys\nprint('ready', flush=True)\nsys.stdin.read()"
BUSY_WITH_BUSY_CHILD = f"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {BUSY!r}], stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print("ready", flush=True)
while True: pass
"""
# A sleeping root whose child is busy and whose grandchild is busy too.
SLEEPY_WITH_BUSY_DESCENDANTS = f"""
import subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", {BUSY_WITH_BUSY_CHILD!r}], stdout=subprocess.PIPE, text=True
)
child.stdout.readline()
print("ready", flush=True)
time.sleep(60)
"""


def test_public_api() -> None:
    assert sorted(probes_package.__all__) == sorted(
        [
            "CpuProbe",
            "CpuSample",
            "DeviceSample",
            "GpuProbe",
            "GpuSample",
            "NodeProbe",
            "NodeReading",
            "NodesSample",
            "RamSample",
            "process_tree",
            "read_ram",
            "usable_cpus",
        ]
    )


# --- CPU ------------------------------------------------------------------------------

Spawn = Callable[[str], subprocess.Popen[str]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start `python -c CODE` in its own session, wait for its "ready"; kill all at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(code: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: grandchildren too
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time of the live ``pids``, read from /proc/<pid>/stat directly (not via psutil)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / CLK_TCK


def measure(
    probes: Sequence[CpuProbe], pids: Callable[[], list[int]], between: Callable[[], object] = list
) -> tuple[list[CpuSample], float]:
    """Sample ``probes`` over one interval; also return the truth for ``pids`` over it.

    The truth is CPU-seconds / (wall seconds * cores) from /proc, over an interval that
    brackets the probes' one. Comparing with it, rather than with a fixed 1/ncores, keeps
    the tests right on a machine that other work keeps busy.
    """
    cpu0, t0 = cpu_seconds(pids()), time.monotonic()
    for probe in probes:
        assert probe.sample().util is None, "no interval yet on the first sample"
    between()
    time.sleep(INTERVAL_S)
    samples = [probe.sample() for probe in probes]
    t1, cpu1 = time.monotonic(), cpu_seconds(pids())
    for sample in samples:
        assert sample.util is not None
    return samples, (cpu1 - cpu0) / ((t1 - t0) * NCORES)


def test_busy_child_reads_its_share_of_the_machine(spawn: Spawn) -> None:
    busy = spawn(BUSY)
    probe = CpuProbe(lambda: process_tree(busy.pid))
    (sample,), truth = measure([probe], lambda: [busy.pid])
    assert sample.util is not None
    assert sample.util == pytest.approx(truth, abs=TOLERANCE)
    assert MIN_BUSY / NCORES < sample.util < 1.1 / NCORES  # busy, and at most one core
    assert sample.nprocs == 1
    assert sample.rss_bytes > 1 * MiB


def test_ncores_scales_the_fraction(spawn: Spawn) -> None:
    busy = spawn(BUSY)
    probes = [CpuProbe(lambda: [psutil.Process(busy.pid)], ncores=n) for n in (1, 4)]
    (one, four), _ = measure(probes, lambda: [busy.pid])
    assert one.util is not None and four.util is not None
    assert one.util > MIN_BUSY
    assert one.util == pytest.approx(4 * four.util, rel=0.05)


def test_sleeping_child_reads_near_zero(spawn: Spawn) -> None:
    sleepy = spawn(SLEEPY)
    (sample,), _ = measure([CpuProbe(lambda: process_tree(sleepy.pid))], lambda: [sleepy.pid])
    assert sample.util is not None
    assert 0.0 <= sample.util < 0.02


def test_grandchild_is_counted(spawn: Spawn) -> None:
    root = spawn(SLEEPY_WITH_BUSY_DESCENDANTS)
    tree = process_tree(root.pid)
    assert len(tree) == 3
    grandchild = psutil.Process(root.pid).children()[0].children()[0]
    probes = [CpuProbe(lambda: process_tree(root.pid)), CpuProbe(lambda: [grandchild])]
    (whole, alone), truth = measure(probes, lambda: [p.pid for p in tree])
    assert whole.nprocs == 3
    assert whole.util is not None and alone.util is not None
    assert alone.util > MIN_BUSY / NCORES
    assert whole.util > alone.util + MIN_BUSY / NCORES  # the busy child as well
    assert whole.util == pytest.approx(truth, abs=TOLERANCE)


def test_process_born_between_samples_is_counted(spawn: Spawn) -> None:
    procs = [psutil.Process(spawn(SLEEPY).pid)]
    probe = CpuProbe(lambda: list(procs))

    def start_busy() -> None:
        procs.append(psutil.Process(spawn(BUSY).pid))

    (sample,), truth = measure([probe], lambda: [p.pid for p in procs], between=start_busy)
    assert sample.nprocs == 2
    assert sample.util is not None
    assert sample.util > MIN_BUSY / NCORES
    assert sample.util == pytest.approx(truth, abs=TOLERANCE)


def test_process_exiting_between_samples_is_dropped(spawn: Spawn) -> None:
    busy = spawn(BUSY)
    short = spawn(WAIT_STDIN)
    procs = [psutil.Process(busy.pid), psutil.Process(short.pid)]
    probe = CpuProbe(lambda: procs)  # stale objects: the caller still lists the dead one

    def end_short() -> None:
        assert short.stdin is not None
        short.stdin.close()
        short.wait(timeout=10)

    (sample,), truth = measure([probe], lambda: [busy.pid], between=end_short)
    assert sample.nprocs == 1
    assert sample.util is not None
    assert sample.util > MIN_BUSY / NCORES
    assert sample.util == pytest.approx(truth, abs=TOLERANCE)


def test_tree_of_a_missing_process_is_empty(spawn: Spawn) -> None:
    gone = spawn(WAIT_STDIN)
    assert gone.stdin is not None
    gone.stdin.close()
    gone.wait(timeout=10)
    assert process_tree(gone.pid) == []
    probe = CpuProbe(lambda: process_tree(gone.pid))
    assert probe.sample().util is None
    sample = probe.sample()
    assert (sample.nprocs, sample.rss_bytes, sample.util) == (0, 0, 0.0)


def test_ncores_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ncores"):
        CpuProbe(list, ncores=0)


# --- RAM ------------------------------------------------------------------------------


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(root: Path, levels: dict[str, tuple[str, int]], cgroup: str) -> None:
    write(root, "proc/self/cgroup", f"0::{cgroup}\n")
    for rel, (limit, current) in levels.items():
        d = f"sys/fs/cgroup/{rel}".rstrip("/")
        write(root, f"{d}/memory.max", f"{limit}\n")
        write(root, f"{d}/memory.current", f"{current}\n")


def test_v2_limit_gives_limit_minus_usage(tmp_path: Path) -> None:
    v2_tree(tmp_path, {"job.slice/run.scope": (str(GiB), 600 * MiB)}, "/job.slice/run.scope")
    ram = read_ram(root=tmp_path)
    assert ram.host_available_bytes > GiB
    assert ram.available_bytes == 424 * MiB
    assert ram.cgroup_available_bytes == 424 * MiB
    assert ram.cgroup_limit_bytes == GiB
    assert ram.total_bytes == GiB


def test_v2_max_means_host_figure(tmp_path: Path) -> None:
    v2_tree(tmp_path, {"job.slice": ("max", 600 * MiB)}, "/job.slice")
    ram = read_ram(root=tmp_path)
    assert ram.available_bytes == ram.host_available_bytes
    assert ram.cgroup_available_bytes is None
    assert ram.cgroup_limit_bytes is None
    assert ram.total_bytes == psutil.virtual_memory().total


def test_v2_tighter_parent_wins(tmp_path: Path) -> None:
    v2_tree(
        tmp_path,
        {
            "": ("max", 5 * GiB),
            "user.slice": (str(GiB), 900 * MiB),
            "user.slice/run.scope": (str(4 * GiB), 600 * MiB),
        },
        "/user.slice/run.scope",
    )
    ram = read_ram(root=tmp_path)
    assert ram.available_bytes == 124 * MiB
    assert ram.cgroup_limit_bytes == GiB


def test_v2_reclaimable_page_cache_is_not_counted_as_used(tmp_path: Path) -> None:
    v2_tree(tmp_path, {"run.scope": (str(GiB), 600 * MiB)}, "/run.scope")
    write(tmp_path, "sys/fs/cgroup/run.scope/memory.stat", f"anon 1\ninactive_file {100 * MiB}\n")
    assert read_ram(root=tmp_path).available_bytes == 524 * MiB


def test_v2_container_path_missing_reads_mount_root(tmp_path: Path) -> None:
    # Without a cgroup namespace the path names the host's hierarchy; the mount root is ours.
    v2_tree(tmp_path, {"": (str(2 * GiB), GiB)}, "/docker/abc123")
    assert read_ram(root=tmp_path).available_bytes == GiB


def test_v1_limit_and_unlimited_root(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "5:cpu,cpuacct:/\n4:memory:/process_api/x\n0::/\n")
    mem = "sys/fs/cgroup/memory"
    write(tmp_path, f"{mem}/memory.limit_in_bytes", "9223372036854771712\n")
    write(tmp_path, f"{mem}/memory.usage_in_bytes", f"{3 * GiB}\n")
    write(tmp_path, f"{mem}/process_api/x/memory.limit_in_bytes", f"{2 * GiB}\n")
    write(tmp_path, f"{mem}/process_api/x/memory.usage_in_bytes", f"{1536 * MiB}\n")
    write(
        tmp_path,
        f"{mem}/process_api/x/memory.stat",
        f"inactive_file {MiB}\ntotal_inactive_file {256 * MiB}\n",
    )
    ram = read_ram(root=tmp_path)
    assert ram.available_bytes == 768 * MiB
    assert ram.cgroup_limit_bytes == 2 * GiB


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"proc/self/cgroup": "garbage without colons\n"},
        {"proc/self/cgroup": "0::/a\n", "sys/fs/cgroup/a/memory.max": str(GiB)},
        {
            "proc/self/cgroup": "0::/a\n",
            "sys/fs/cgroup/a/memory.max": "lots\n",
            "sys/fs/cgroup/a/memory.current": "1\n",
        },
        {"proc/self/cgroup": "4:memory:/x\n", "sys/fs/cgroup/memory/x/memory.usage_in_bytes": "5"},
    ],
    ids=["nothing", "garbage-cgroup", "no-current", "odd-max", "v1-no-limit"],
)
def test_missing_or_odd_files_fall_back_to_host(tmp_path: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        write(tmp_path, rel, text)
    ram = read_ram(root=tmp_path)
    assert ram.available_bytes == ram.host_available_bytes
    assert ram.cgroup_limit_bytes is None


def test_real_machine_reads_positive_numbers() -> None:
    ram = read_ram()
    assert isinstance(ram, RamSample)
    assert 0 < ram.available_bytes <= ram.host_available_bytes
    assert ram.total_bytes > 0
    assert ram.available_bytes <= ram.total_bytes


# --- GPU ------------------------------------------------------------------------------


def assert_all_none(sample: GpuSample) -> None:
    assert sample.available is False
    assert sample.devices == ()
    assert sample.util is None
    assert sample.sm_activity is None
    assert sample.busy is None
    assert sample.mem_used_bytes is None
    assert sample.mem_total_bytes is None
    assert sample.attributed is None


def test_fake_nvml_is_specified_against_pynvml() -> None:
    public = [name for name in vars(FakeNvml) if not name.startswith("_")]
    assert "nvmlGpmMetricsGet" in public
    missing = [name for name in public if not hasattr(pynvml, name)]
    assert missing == []


def real_nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_real_pynvml_without_driver_gives_all_none() -> None:
    if real_nvml_works():
        pytest.skip("this machine has an NVIDIA driver")
    probe = GpuProbe()
    assert probe.available is False
    assert probe.unavailable_reason is not None
    assert "NVML" in probe.unavailable_reason
    assert_all_none(probe.sample(pids=[os.getpid()], devices=[0]))
    probe.close()


def test_init_error_gives_all_none_and_no_shutdown() -> None:
    fake = FakeNvml(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    probe = GpuProbe(fake)
    assert probe.available is False
    assert probe.unavailable_reason is not None
    assert "Driver Not Loaded" in probe.unavailable_reason
    assert_all_none(probe.sample(pids=[111]))
    probe.close()
    assert fake.shutdowns == 0


def test_no_device_is_unavailable() -> None:
    fake = FakeNvml(count=0)
    probe = GpuProbe(fake)
    assert probe.available is False
    assert_all_none(probe.sample())
    assert fake.shutdowns == 1


def test_job_devices_are_found_by_pid() -> None:
    probe = GpuProbe(FakeNvml())
    assert probe.available and probe.device_count == 2
    sample = probe.sample(pids={222, 7}, devices=[0])
    assert sample.attributed is True
    assert sample.job_devices == (1,)
    assert sample.util == pytest.approx(0.40)
    assert sample.mem_used_bytes == 1 * GiB
    assert sample.mem_total_bytes == 16 * GiB
    assert [d.job_pids for d in sample.devices] == [[], [222]]
    assert sample.devices[1].util == pytest.approx(0.40)
    assert replace(sample.devices[1], util=None) == DeviceSample(
        index=1,
        name="NVIDIA A16",
        util=None,
        sm_activity=None,
        mem_used_bytes=1 * GiB,
        mem_total_bytes=16 * GiB,
        job_pids=[222],
    )


def test_graphics_processes_count_and_several_devices_aggregate() -> None:
    sample = GpuProbe(FakeNvml()).sample(pids=[111, 333])
    assert sample.attributed is True
    assert sample.job_devices == (0, 1)
    assert [d.job_pids for d in sample.devices] == [[111], [333]]
    assert sample.util == pytest.approx((0.90 + 0.40) / 2)
    assert sample.mem_used_bytes == 4 * GiB
    assert sample.mem_total_bytes == 96 * GiB


def test_unattributed_job_falls_back_to_named_devices_then_all() -> None:
    probe = GpuProbe(FakeNvml())
    named = probe.sample(pids=[999], devices=[0])
    assert named.attributed is False
    assert named.job_devices == (0,)
    assert named.util == pytest.approx(0.90)
    every = probe.sample(pids=[999])
    assert every.attributed is False
    assert every.job_devices == (0, 1)
    assert every.util == pytest.approx(0.65)


def test_busy_prefers_sm_activity_once_there_is_an_interval() -> None:
    fake = FakeNvml()
    probe = GpuProbe(fake)
    first = probe.sample(pids=[111])
    assert first.sm_activity is None
    assert first.busy == pytest.approx(0.90)  # util until GPM has two samples
    second = probe.sample(pids=[111])
    assert second.devices[0].sm_activity == pytest.approx(0.55)
    assert second.devices[1].sm_activity is None
    assert second.util == pytest.approx(0.90)
    assert second.busy == pytest.approx(0.55)
    fake.sm_util_percent[0] = 20.0
    assert probe.sample(pids=[111]).busy == pytest.approx(0.20)


def test_busy_is_util_where_gpm_is_unsupported() -> None:
    probe = GpuProbe(FakeNvml())
    probe.sample(pids=[222])
    sample = probe.sample(pids=[222])
    assert sample.sm_activity is None
    assert sample.busy == pytest.approx(0.40)


@pytest.mark.parametrize(
    ("failing", "none_fields"),
    [
        ({"nvmlDeviceGetUtilizationRates"}, {"util"}),
        ({"nvmlDeviceGetMemoryInfo"}, {"mem_used_bytes", "mem_total_bytes"}),
        ({"nvmlGpmMetricsGet"}, {"sm_activity"}),
        ({"nvmlDeviceGetName"}, set()),
    ],
)
def test_error_in_one_call_degrades_one_field(failing: set[str], none_fields: set[str]) -> None:
    fake = FakeNvml()
    probe = GpuProbe(fake)
    fake.failing = failing
    probe.sample(pids=[111])
    sample = probe.sample(pids=[111])
    fields = ("util", "sm_activity", "mem_used_bytes", "mem_total_bytes")
    assert {f for f in fields if getattr(sample, f) is None} == none_fields
    assert {f for f in fields if getattr(sample.devices[0], f) is None} == none_fields
    assert sample.attributed is True


def test_unreadable_process_lists_leave_attribution_unknown() -> None:
    fake = FakeNvml()
    fake.failing = {"nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"}
    sample = GpuProbe(fake).sample(pids=[111], devices=[1])
    assert sample.attributed is None
    assert sample.job_devices == (1,)
    assert sample.util == pytest.approx(0.40)


def test_one_unreadable_memory_figure_makes_the_sum_unknown() -> None:
    fake = FakeNvml()
    probe = GpuProbe(fake)
    fake.mem[1] = (GiB, 16 * GiB)
    fake.failing = {"nvmlDeviceGetMemoryInfo"}
    assert probe.sample().mem_used_bytes is None


def test_failed_gpm_read_restarts_the_interval() -> None:
    fake = FakeNvml()
    probe = GpuProbe(fake)
    probe.sample()
    assert probe.sample().devices[0].sm_activity == pytest.approx(0.55)
    fake.failing = {"nvmlGpmSampleGet"}
    assert probe.sample().devices[0].sm_activity is None
    fake.failing = set()
    assert probe.sample().devices[0].sm_activity is None  # no earlier sample to pair with
    assert probe.sample().devices[0].sm_activity == pytest.approx(0.55)


def test_close_frees_gpm_and_shuts_down_once() -> None:
    fake = FakeNvml()
    with GpuProbe(fake) as probe:
        probe.sample()
        probe.close()
        assert_all_none(probe.sample())
    assert fake.inits == 1
    assert fake.shutdowns == 1
    assert fake.freed == 2
    assert probe.unavailable_reason == "probe closed"


def test_available_util_is_what_the_job_wanted() -> None:
    from harness.runtime.probes import CpuSample

    def s(util: float | None, wait: float | None) -> CpuSample:
        return CpuSample(t=0.0, util=util, nprocs=1, rss_bytes=0, wait=wait)

    assert s(0.5, 0.0).available_util == pytest.approx(0.5)  # one thread of two cores
    assert s(0.4, 0.6).available_util == pytest.approx(1.0)  # busy but starved by others
    assert s(0.01, 0.0).available_util == pytest.approx(0.01)  # a sleeper, whatever the load
    assert s(0.9, 0.5).available_util == 1.0  # capped
    assert s(0.3, None).available_util == pytest.approx(0.3)  # no schedstat: plain share
    assert s(None, 0.5).available_util is None


def test_usable_cpus_honours_a_cgroup_quota(tmp_path: Path) -> None:
    from harness.runtime.probes import usable_cpus

    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("0::/job.slice/run\n")
    leaf = tmp_path / "sys/fs/cgroup/job.slice/run"
    leaf.mkdir(parents=True)
    (leaf / "cpu.max").write_text("max 100000\n")
    (leaf.parent / "cpu.max").write_text("150000 100000\n")  # the parent caps at 1.5 CPUs
    _, cores = usable_cpus(tmp_path)
    assert cores == pytest.approx(min(1.5, len(os.sched_getaffinity(0))))
    (leaf.parent / "cpu.max").write_text("max 100000\n")
    _, cores = usable_cpus(tmp_path)
    assert cores == len(os.sched_getaffinity(0))


def test_a_starved_busy_process_reads_as_wanting_the_machine(spawn: Spawn) -> None:
    """Two busy processes pinned to one CPU: each gets half of it but wants all of it."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    code = f"import os; os.sched_setaffinity(0, {{{cpu}}}); print('ready', flush=True)\n"
    code += "while True: pass"
    a, b = spawn(code), spawn(code)
    probe = CpuProbe(lambda: [psutil.Process(a.pid)], ncores=1)
    probe.sample()
    time.sleep(1.0)
    sample = probe.sample()
    assert sample.util is not None and sample.wait is not None
    assert sample.util < 0.75  # it shares the CPU with b ...
    assert sample.available_util is not None and sample.available_util > 0.85  # ... yet wants it
    assert b.poll() is None
