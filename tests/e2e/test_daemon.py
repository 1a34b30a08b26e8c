"""`harness serve` end to end: real daemon processes, a fake Discord on 127.0.0.1, SIGKILL.

Each test starts the fake Discord (``python -m tests.fakes.discord_server``) and one or
two daemons as subprocesses with their own HARNESS_HOME, and reads what reached Discord
through the fake's ``/_fake/messages``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

import mistakes as ml
from memory import Run
from sidecar import enqueue

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOT_TOKEN = "fake-bot-token-0123456789"
CHANNEL = "424242"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Fake:
    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port, self.proc = port, proc
        self.url = f"http://127.0.0.1:{port}"

    def messages(self) -> list[dict[str, Any]]:
        data = httpx.get(f"{self.url}/_fake/messages", timeout=10).json()
        return list(data["messages"] if isinstance(data, dict) else data)

    def config(self, **body: Any) -> None:
        httpx.post(f"{self.url}/_fake/config", json=body, timeout=10).raise_for_status()


@pytest.fixture
def fake() -> Iterator[Fake]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.discord_server", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    f = Fake(port, proc)

    def up() -> bool:
        try:
            httpx.get(f"{f.url}/_fake/messages", timeout=1)
            return True
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 15, "the fake Discord")
        yield f
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Daemon:
    """A `harness serve` subprocess for one state dir."""

    def __init__(self, home: Path, env: dict[str, str], port: int) -> None:
        self.home, self.env, self.port = home, env, port
        self.proc: subprocess.Popen[str] | None = None
        self.log = home / "serve.log"

    def start(self) -> Daemon:
        out = self.log.open("a")
        self.proc = proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "serve"],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out.close()
        wait_for(
            lambda: (self.home / "serve.json").exists() or proc.poll() is not None,
            30,
            "harness serve to start",
        )
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def harness(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def token(self) -> str:
        return (self.home / "sidecar.token").read_text().strip()

    def send(self, text: str) -> None:
        r = httpx.post(
            f"http://127.0.0.1:{self.port}/send",
            json={"text": text},
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=30,
        )
        assert r.status_code == 202, r.text

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


def make_home(
    tmp_path: Path,
    fake: Fake,
    *,
    heartbeat_s: float = 300,
    webhook: bool = False,
    name: str = "state",
) -> tuple[Path, dict[str, str], int]:
    home = tmp_path / name
    home.mkdir()
    port = free_port()
    discord = (
        f'[discord]\napi_base = "{fake.url}/api/v10"\n'
        if webhook
        else f'[discord]\nchannel_id = "{CHANNEL}"\napi_base = "{fake.url}/api/v10"\n'
    )
    (home / "harness.toml").write_text(
        f"[heartbeat]\ninterval_s = {heartbeat_s}\nmisfire_grace_s = 5\n"
        f"[sidecar]\nport = {port}\n" + discord
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    env["HARNESS_HOME"] = str(home)
    if webhook:
        env["HARNESS_DISCORD_WEBHOOK_URL"] = (
            f"{fake.url}/api/webhooks/111/fake-webhook-token-abcdefghijklmnopqrstuvwxyz"
        )
    else:
        env["HARNESS_DISCORD_TOKEN"] = BOT_TOKEN
    return home, env, port


def _contents(fake: Fake, prefix: str) -> list[str]:
    return [m["content"] for m in fake.messages() if (m.get("content") or "").startswith(prefix)]


def _kill_marked(run_id: str) -> None:
    for p in psutil.process_iter():
        try:
            if p.environ().get("HARNESS_RUN_ID") == run_id:
                p.kill()
        except psutil.Error:
            pass


@pytest.mark.parametrize("mode", ["channel", "webhook"])
def test_sigkill_with_500_queued_loses_nothing(tmp_path: Path, fake: Fake, mode: str) -> None:
    home, env, port = make_home(tmp_path, fake, webhook=mode == "webhook")
    # 500 messages queued before the daemon starts; Discord is slow (a small bucket), so
    # the daemon is killed with most of them still in the outbox.
    with ml.open_log(home / "harness.db") as store, store.write() as s:
        for n in range(500):
            enqueue(session=s, text=f"msg {n:03d}")
    fake.config(bucket={"limit": 10, "window": 0.5})
    first = Daemon(home, env, port).start()
    wait_for(lambda: len(_contents(fake, "msg ")) >= 30, 60, "some deliveries")
    first.stop(signal.SIGKILL)
    before = len(_contents(fake, "msg "))
    assert before < 500, "the test must kill the daemon mid-delivery"
    fake.config(bucket={"limit": 1000, "window": 1})
    second = Daemon(home, env, port).start()
    try:
        got = wait_for(
            lambda: (c := _contents(fake, "msg ")) and len(set(c)) == 500 and c,
            120,
            "all 500 messages",
        )
    finally:
        second.stop()
    expected = [f"msg {n:03d}" for n in range(500)]
    deduped = list(dict.fromkeys(got))
    assert deduped == expected  # every message, in order
    duplicates = len(got) - len(deduped)
    if mode == "channel":
        assert duplicates == 0  # nonce + enforce_nonce
    else:
        assert duplicates <= 1  # at most the one message in flight at the kill


def test_heartbeats_keep_time_while_a_job_hangs_and_the_stall_alert_comes_between(
    tmp_path: Path, fake: Fake
) -> None:
    home, env, port = make_home(tmp_path, fake, heartbeat_s=2)
    daemon = Daemon(home, env, port).start()
    spec = home / "hang.toml"
    spec.write_text(
        'name = "hang"\n'
        'command = ["{python}", "-c", "import time, json, os; '
        "open(os.environ['HARNESS_METRICS'], 'a').write(json.dumps({'t': time.time(), "
        "'step': 1, 'loss': 1.0}) + chr(10)); time.sleep(600)\"]\n"
        "[watch]\nstall_s = 5\nmin_ram_free_gb = 0.05\nutil_grace_s = 600\n"
        "int_grace_s = 1\nterm_grace_s = 1\n"
    )
    try:
        proc = daemon.harness("run", str(spec), timeout=60)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "no metrics for" in proc.stdout
        time.sleep(4.5)  # two more heartbeats after the abort
    finally:
        daemon.stop()
    msgs = fake.messages()
    beats = [m["t"] for m in msgs if m.get("embeds") and "heartbeat" in m["embeds"][0]["title"]]
    alerts = [m["t"] for m in msgs if "aborting: no metrics" in (m.get("content") or "")]
    assert len(alerts) == 1
    assert len(beats) >= 5
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert max(gaps) < 2 * 2.0, gaps  # none skipped, although the job hung
    # The alert went out on its own, between two heartbeats, not with the next one.
    assert any(a < alerts[0] < b for a, b in itertools.pairwise(beats))
    assert not any(abs(alerts[0] - b) < 0.05 for b in beats)


def test_second_serve_is_refused_and_sigterm_leaves_jobs_for_the_next_start(
    tmp_path: Path, fake: Fake
) -> None:
    home, env, port = make_home(tmp_path, fake)
    daemon = Daemon(home, env, port).start()
    spec = home / "steady.toml"
    spec.write_text(
        'name = "steady"\n'
        'command = ["{python}", "-c", "import time; from harness.job import Reporter; '
        "r = Reporter(); r.start(total_steps=40, device='cpu')\\n"
        "for i in range(40):\\n    r.step(i, loss=1/(i+1)); time.sleep(0.25)\\n"
        'r.end(acc=1.0)"]\n'
        "[watch]\nmin_ram_free_gb = 0.05\nutil_grace_s = 600\nstall_s = 30\n"
        '[gates]\nacc = ">= 0.5"\n'
    )
    run_id = ""
    try:
        again = daemon.harness("serve", timeout=30)
        assert again.returncode == 1  # a failure, not bad input
        assert daemon.proc is not None
        assert "already running" in again.stderr and str(daemon.proc.pid) in again.stderr
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {daemon.token()}"},
        ) as api:
            spec_data = tomllib.loads(spec.read_text())
            r = api.post("/runs", json={"spec": spec_data, "source": "test"}, timeout=60)
            assert r.status_code == 201, r.text
            run_id = r.json()["id"]
            wait_for(
                lambda: api.get(f"/runs/{run_id}").json()["progress"].get("step"), 20, "progress"
            )
        assert daemon.stop(signal.SIGTERM) == 0
        with ml.open_log(home / "harness.db") as store, store.read() as s:
            row = s.get(Run, run_id)
            assert row is not None and row.status == "running" and row.pid is not None
            assert psutil.pid_exists(row.pid)  # the job outlived the daemon
        second = Daemon(home, env, port).start()
        try:

            def ended() -> Run | None:
                with ml.open_log(home / "harness.db") as store, store.read() as s:
                    r = s.get(Run, run_id)
                    return r if r is not None and r.status not in ("running", "aborting") else None

            final = wait_for(ended, 60, "the re-adopted run to end")
        finally:
            second.stop()
        assert final.status == "succeeded", final.summary
        assert "re-adopted" in daemon.log.read_text()
    finally:
        if run_id:
            _kill_marked(run_id)


def test_a_foreground_run_delivers_its_alerts_before_it_exits(tmp_path: Path, fake: Fake) -> None:
    """No daemon: `harness run` itself delivers, and its final alert is out when it returns."""
    home, env, _ = make_home(tmp_path, fake)
    spec = home / "crash.toml"
    spec.write_text(
        'name = "crash"\n'
        'command = ["{python}", "-c", "import sys; print(\'boom\', file=sys.stderr); '
        'sys.exit(3)"]\n'
        "[watch]\nmin_ram_free_gb = 0.05\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    alerts = [
        m["content"] for m in fake.messages() if "failed: exit code 3" in (m["content"] or "")
    ]
    assert len(alerts) == 1 and "boom" in alerts[0]


def test_poison_and_hostile_input_against_a_real_daemon(tmp_path: Path, fake: Fake) -> None:
    """Issue 10, classes 1 and 5, end to end: a poison row left in the outbox does not
    hold up the message behind it, `harness messages` lists it, retry/drop answer with
    the right exit codes, invalid Unicode and blank run ids are refused, and `harness send`
    through the daemon stores its message once."""
    from sidecar._outbox import store_prepared

    home, env, port = make_home(tmp_path, fake)
    with ml.open_log(home / "harness.db") as store, store.write() as s:
        [[poison]] = store_prepared(session=s, messages=[("text", [{"content": "bad \ud800"}])])
        enqueue(session=s, text="poison-test: behind the poison")
    daemon = Daemon(home, env, port).start()
    try:
        wait_for(lambda: _contents(fake, "poison-test"), 30, "the message behind the poison")
        listed = daemon.harness("messages")
        assert listed.returncode == 0, listed.stderr
        assert f"#{poison}" in listed.stdout and "dead" in listed.stdout
        assert "UnicodeEncodeError" in listed.stdout
        with ml.open_log(home / "harness.db") as store, store.read() as s:
            assert any(f"message {poison}" in i.summary for i in ml.list_incidents(session=s))

        sent = daemon.harness("messages", "drop", str(poison + 1))
        assert sent.returncode == 1 and "already sent" in sent.stderr
        assert daemon.harness("messages", "retry", "999999").returncode == 1
        assert daemon.harness("messages", "drop", str(poison)).returncode == 0

        headers = {"Authorization": f"Bearer {daemon.token()}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as api:
            bad = api.post("/send", content=b'{"text": "x \\ud800"}', timeout=30)
            assert bad.status_code == 400 and "not valid Unicode" in bad.json()["error"]
            for path in ("/runs/%20/abort", "/runs/%20%20", "/runs/%09/controls"):
                method = "GET" if path.count("/") == 2 else "POST"
                r = api.request(method, path, json={"reason": "x"}, timeout=30)
                assert r.status_code == 404, (path, r.text)
            r = api.get("/health", headers={b"Authorization": "Bearer tökén".encode()}, timeout=30)
            assert r.status_code == 401

        queued = daemon.harness("send", "poison-test: through the daemon")
        assert queued.returncode == 0, queued.stderr
        wait_for(lambda: len(_contents(fake, "poison-test")) == 2, 30, "the sent message")
    finally:
        daemon.stop()
    log = daemon.log.read_text()  # (the bot's own traceback, with no network, is not ours)
    assert "Error handling request" not in log and "failed unexpectedly" not in log
    assert f"outbox message {poison} cannot be sent, dead-lettered" in log


def strict_json(text: str) -> Any:
    """``text`` parsed as strict JSON: a bare NaN or Infinity fails the test."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in {text[:200]}"))


def test_get_run_after_a_nan_abort_is_strict_json(tmp_path: Path, fake: Fake) -> None:
    home, env, port = make_home(tmp_path, fake)
    daemon = Daemon(home, env, port).start()
    spec = {
        "name": "nan",
        "command": [sys.executable, str(ROOT / "tests" / "e2e" / "jobs" / "nan_loss.py")],
        "device": "cpu",
        "watch": {"min_ram_free_gb": 0.05, "util_grace_s": 600, "int_grace_s": 1},
    }
    run_id = ""
    try:
        headers = {"Authorization": f"Bearer {daemon.token()}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as api:
            r = api.post("/runs", json={"spec": spec, "source": "test"}, timeout=60)
            assert r.status_code == 201, r.text
            run_id = r.json()["id"]

            def finished() -> str | None:
                text = api.get(f"/runs/{run_id}", timeout=30).text
                status = strict_json(text)["status"]
                return text if status not in ("running", "aborting", "starting") else None

            assert "aborted" in strict_json(wait_for(finished, 60, "the NaN abort"))["status"]
            strict_json(api.get("/runs", timeout=30).text)
    finally:
        daemon.stop()
        if run_id:
            _kill_marked(run_id)
