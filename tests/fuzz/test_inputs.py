"""Arbitrary specs, config files, MISTAKES.md files and command lines (issue 10).

Against the real components: the spec loader, the settings tree, the mistake-log import
on a real SQLite file, and ``harness.cli.main``. Whatever comes in: a value or one of
our errors in one line; exit codes 0, 1 or 2 only; nothing half-written.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mistakes as ml
from harness.cli.main import main
from harness.daemon.config import load_settings
from harness.errors import HarnessError
from harness.runtime.specs import load_spec
from memory import Run, Store

fuzz = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# TOML-ish text built from the keys the loaders know, values of every kind, and noise.
values = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e308", "1e999", "true", "0", "-1", "[]", "{}"]),
    st.text(max_size=20).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.text(max_size=20),
)
spec_keys = st.sampled_from(
    ["name", "command", "device", "launcher", "cwd", "preflight", "key_metric", "bogus"]
)
tables = st.sampled_from(["watch", "gates", "controls", "args", "env", "nope"])
table_keys = st.sampled_from(
    ["min_util", "util_grace_s", "stall_s", "nonfinite", "lr", "steps", "acc", "x", "interval_s"]
)


@st.composite
def toml_texts(draw: st.DrawFn, top: st.SearchStrategy[str]) -> str:
    lines = [f"{draw(top)} = {draw(values)}" for _ in range(draw(st.integers(0, 4)))]
    for _ in range(draw(st.integers(0, 3))):
        lines.append(f"[{draw(tables | st.sampled_from(['heartbeat', 'sidecar', 'discord']))}]")
        lines += [f"{draw(table_keys)} = {draw(values)}" for _ in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=30)))
    return "\n".join(lines) + "\n"


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, text
    assert len(text) < 2000


@fuzz
@given(text=toml_texts(spec_keys))
def test_any_spec_file_loads_or_is_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        spec, _ = load_spec(str(path))
    except HarnessError as exc:
        _one_line(exc)
    else:
        assert spec.name and spec.command


@fuzz
@given(text=toml_texts(st.sampled_from(["interval_s", "port", "x"])))
def test_any_config_file_loads_or_is_one_line(tmp_path: Path, text: str) -> None:
    (tmp_path / "harness.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        s = load_settings({"HARNESS_HOME": str(tmp_path)})
    except HarnessError as exc:
        _one_line(exc)
    else:
        assert s.heartbeat.interval_s > 0 and 0 <= s.sidecar.port <= 65535


fields = st.sampled_from(["When", "Symptom", "Root cause", "Fix", "Prevention", "Cost", ""])
md_lines = st.one_of(
    st.builds(lambda n, t: f"### M-{n:03d}: {t}", st.integers(0, 1200), st.text(max_size=30)),
    st.builds(lambda f, t: f"**{f}:** {t}", fields, st.text(max_size=40)),
    st.builds(lambda t: f"## Category: {t}", st.text(max_size=20)),
    st.just("## Prevention Checklist"),
    st.builds(
        lambda t, n: f"- [ ] **{t}:** do it. (M-{n:03d})", st.text(max_size=20), st.integers(0, 50)
    ),
    st.sampled_from(["```", "---", "", "- a bullet", "  1. sub-point"]),
    st.text(max_size=40),
)


@pytest.fixture
def log_store(tmp_path: Path) -> Iterator[Store]:
    with ml.open_log(tmp_path / "harness.db") as store:
        yield store


def _mistakes(store: Store) -> dict[str, str]:
    with store.read() as s:
        return {m.id: m.title for m in ml.list_mistakes(session=s)}


@fuzz
@given(lines=st.lists(md_lines, max_size=40), partial=st.booleans(), raw=st.booleans())
def test_any_mistakes_file_imports_or_is_refused_whole(
    log_store: Store, lines: list[str], partial: bool, raw: bool
) -> None:
    text = "\n".join(lines)
    data = text.encode("utf-8", "surrogatepass") if raw else text.encode("utf-8", "replace")
    before = _mistakes(log_store)
    try:
        report = ml.import_markdown(log_store, data, source="fuzz.md", partial=partial)
    except ml.MistakesError as exc:
        assert _mistakes(log_store) == before  # refused: nothing written
        assert str(exc) and "Traceback" not in str(exc)
        return
    after = _mistakes(log_store)
    assert set(after) == set(before) | set(report.added)
    assert not set(report.added) & set(before)


# Command lines: the safe commands (none starts a job or a server), any arguments.
commands = st.sampled_from(
    [
        ["mistakes", "list"],
        ["mistakes", "show"],
        ["mistakes", "search"],
        ["mistakes", "add", "--title"],
        ["mistakes", "import"],
        ["incidents"],
        ["incidents", "--since"],
        ["incidents", "show"],
        ["incidents", "resolve"],
        ["checklist"],
        ["status"],
        ["runs", "--limit"],
        ["abort", "--wait", "0"],
        ["logs"],
        ["controls", "set", "live-1"],
        ["controls", "show"],
        ["check"],
        ["presets"],
        ["note", "add"],
        ["notes", "--limit"],
        ["orders", "remove"],
        ["inbox"],
        ["brief", "--format"],
        ["messages", "--state"],
        ["messages", "retry"],
        ["messages", "drop"],
        ["send"],
        ["config"],
        ["nope"],
    ]
)
words = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["--json", "-1", "0", "last", "live-1", "M-015", "x=1", "lr=-1", "--set", "-"]),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2),
)


@fuzz
@given(command=commands, args=st.lists(words, max_size=4))
def test_any_command_line_exits_0_1_or_2_without_a_traceback(
    home: Path, capsys: pytest.CaptureFixture[str], command: list[str], args: list[str]
) -> None:
    if not (home / "harness.db").exists():
        home.mkdir(parents=True, exist_ok=True)
        (home / "runs" / "live-1").mkdir(parents=True)
        with ml.open_log(home / "harness.db") as store, store.write() as s:
            s.add(
                Run(id="live-1", name="live", status="running", run_dir=str(home / "runs/live-1"))
            )
    argv = [*command, *args]
    saved, sys.stdin = sys.stdin, io.TextIOWrapper(io.BytesIO(b""))  # `-` reads empty stdin
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse, --help, --version
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.stdin = saved
    out, err = capsys.readouterr()
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in out + err, (argv, err)
