"""Record REAL metric traces from the bundled trainer on CPU, with faults injected.

    .venv/bin/python tests/diagnosis/record_real.py             # record every scenario
    .venv/bin/python tests/diagnosis/record_real.py lr_change   # just these
    .venv/bin/python tests/diagnosis/record_real.py --summary   # summarise what is there
    .venv/bin/python tests/diagnosis/record_real.py --labels    # rewrite their labels only

Each scenario runs ``python -P -m model.train`` (or tests/diagnosis/frozen_train.py for
a frozen model) with HARNESS_METRICS at a temp file, HARNESS_CONTROLS at a controls.json
written here (first content ``{"lr": <start lr>}``) and HARNESS_DATA_DIR at a temp dir.
A mid-run fault is injected the way the supervisor would: this script watches the
metrics file and, once the job has logged the trigger step, rewrites controls.json; the
job applies it and emits a ``controls`` event. The trace is copied into corpus/ as
``real_<name>.jsonl`` with floats rounded to 9 significant digits (lossless for the
trainer's float32 values; ``t`` as written) and nothing else changed.

The labels below were written by reading the summaries this script prints for the
committed recordings (the numbers are in each label's note), not by what each fault
was meant to do. Re-recording on another machine can shift the numbers a little (the
timings certainly); read the summaries again before trusting the labels.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"
LABELS = CORPUS / "labels.json"
PYTHON = sys.executable


@dataclass
class Scenario:
    name: str
    args: list[str]  # model.train arguments (besides --out and --device)
    start_lr: float
    label: dict[str, Any]
    change_at: int | None = None  # the logged step after which controls.json is rewritten
    change: dict[str, Any] = field(default_factory=dict)  # keys replaced in controls.json
    frozen: str | None = None  # a tests/diagnosis/frozen_train.py mode
    resume_steps: int = 0  # > 0: then resume from the last checkpoint up to this many steps


def _common(steps: int, batch: int, lr: float, *extra: str, task: str = "echo") -> list[str]:
    return [
        "--task",
        task,
        "--steps",
        str(steps),
        "--batch",
        str(batch),
        "--lr",
        str(lr),
        "--threads",
        "2",
        "--eval-every",
        "25",
        "--log-every",
        "5",
        "--checkpoint-every",
        "100",
        *extra,
    ]


def _label(
    healthy: bool,
    symptoms: list[str],
    primary: str | None,
    onset: int | None,
    cause: str | None,
    note: str,
    tolerated: list[str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "healthy": healthy,
        "symptoms": symptoms,
        "primary": primary,
        "onset_step": onset,
        "cause": cause,
        "source": "real",
        "note": note,
    }
    if tolerated:
        out["tolerated"] = tolerated
    return out


# The labels: what the committed recordings show (record_real.py --summary prints these
# numbers). ``tolerated``: symptoms a detector may also report without being wrong.
SCENARIOS: list[Scenario] = [
    Scenario(
        "healthy_echo",
        _common(200, 128, 3e-3),
        3e-3,
        _label(
            True,
            [],
            None,
            None,
            None,
            "echo, 200 steps, batch 128, lr 3e-3: loss 0.692 -> 0.235, avg_bit_acc 0.9373 at"
            " 100 and 0.93758 (the ceiling) from 150: the gate (0.93) passed",
        ),
    ),
    Scenario(
        "healthy_not",
        _common(150, 256, 3e-3, task="not"),
        3e-3,
        _label(
            True,
            [],
            None,
            None,
            None,
            "task not, 150 steps, batch 256, lr 3e-3: loss 0.692 -> 0.228, avg_bit_acc 0.936"
            " at 75, 0.9374 at the end: the gate passed",
        ),
    ),
    Scenario(
        "healthy_resumed",
        _common(120, 128, 3e-3),
        3e-3,
        _label(
            True,
            [],
            None,
            None,
            None,
            "echo to 120 steps (end line), then --resume its step-120 checkpoint to 220: a"
            " second start (resumed_from 120), the initial lr controls event again; acc 0.9376",
        ),
        resume_steps=220,
    ),
    Scenario(
        "lr_change",
        _common(300, 128, 3e-3),
        3e-3,
        _label(
            False,
            ["divergence", "grad_explosion", "metric_collapse"],
            "divergence",
            125,
            "lr_change",
            "echo; controls lr 3e-3 -> 0.1 (x33) after step 120: loss 0.248 -> 0.87 (125),"
            " 0.93 (135), then ~0.69 to the end; grad_norm 0.019 -> 0.55 (x20 its median);"
            " avg_bit_acc 0.937 -> 0.51, 0.54 at the end",
            ["loss_spike", "no_progress"],
        ),
        change_at=120,
        change={"lr": 0.1},
    ),
    Scenario(
        "data_change",
        _common(300, 128, 3e-3),
        3e-3,
        _label(
            False,
            ["metric_collapse", "divergence", "grad_explosion"],
            "metric_collapse",
            175,
            "data_change",
            "echo; data_weights -> not after step 150 (eval stays on echo): avg_bit_acc 0.938 ->"
            " 0.516 (175) -> 0.497; loss 0.241 -> 2.29 (155), then ~0.695 to the end;"
            " grad_norm bursts up to 8.5 (median 0.048)",
            ["loss_spike", "no_progress"],
        ),
        change_at=150,
        change={"data_weights": {"not": 1.0}},
    ),
    Scenario(
        "frozen_most",
        _common(250, 128, 3e-3),
        3e-3,
        _label(
            False,
            ["no_progress"],
            "no_progress",
            5,
            "unknown",
            "echo, every parameter but ln_f frozen (frozen_train.py most): loss 0.699 -> 0.693"
            " in 250 steps, grad_norm steady ~1.2e-3, avg_bit_acc 0.499 -> 0.511",
        ),
        frozen="most",
    ),
    Scenario(
        "frozen_head",
        _common(250, 128, 3e-3),
        3e-3,
        _label(
            False,
            ["vanishing_gradient", "no_progress"],
            "vanishing_gradient",
            5,
            "unknown",
            "echo, head x1e-5 and frozen (frozen_train.py head0): grad_norm 4.6e-7 -> 9.5e-8,"
            " loss 0.693146 +- 2e-7 all run (float32 steps); avg_bit_acc still 0.66 -> 0.80",
            ["degenerate_metric"],
        ),
        frozen="head0",
    ),
    Scenario(
        "lr_too_high",
        _common(250, 128, 0.1),
        0.1,
        _label(
            False,
            ["grad_explosion", "loss_spike"],
            "grad_explosion",
            20,
            "lr_too_high",
            "echo, --lr 0.1 from the start (warmup to 20): grad_norm 0.84 at 20 (median 0.037),"
            " loss 0.477 (15) -> 1.26 (25) -> ~0.69 until 120, then down to 0.382; acc 0.844",
            ["divergence"],
        ),
    ),
    Scenario(
        "lr_far_too_high",
        _common(250, 128, 1.0),
        1.0,
        _label(
            False,
            ["no_progress"],
            "no_progress",
            5,
            "lr_too_high",
            "echo, --lr 1.0 from the start: loss 1.67 at the first line (a new model's is 0.693),"
            " 1.8..4.1 after, 2.96 at the end; grad_norm 1..5.5 (no 10x burst); acc 0.50",
            ["divergence"],
        ),
    ),
]


# -- recording ----------------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, path)  # the job sees the old file or the new one, never half


def _last_step(metrics: Path) -> int:
    try:
        lines = metrics.read_text().splitlines()
    except FileNotFoundError:
        return -1
    for line in reversed(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if isinstance(obj.get("step"), int) and "event" not in obj:
            return int(obj["step"])
    return -1


def _round(value: Any, key: str = "") -> Any:
    """9 significant digits: exact for the float32 values the trainer reports (``t``,
    already rounded to the microsecond by the reporter, is left alone)."""
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0.0 or key == "t":
            return value
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _round(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def record(sc: Scenario) -> Path:
    with tempfile.TemporaryDirectory(prefix=f"diag-{sc.name}-") as tmp_s:
        tmp = Path(tmp_s)
        metrics, controls = tmp / "metrics.jsonl", tmp / "controls.json"
        _write_json(controls, {"lr": sc.start_lr})
        env = dict(os.environ)
        env.update(
            HARNESS_METRICS=str(metrics),
            HARNESS_CONTROLS=str(controls),
            HARNESS_DATA_DIR=str(tmp / "data"),
            PYTHONHASHSEED="0",
        )
        train_args = [*sc.args, "--device", "cpu", "--out", str(tmp / "out")]
        if sc.frozen:
            cmd = [PYTHON, "-m", "tests.diagnosis.frozen_train", sc.frozen, "--", *train_args]
        else:
            cmd = [PYTHON, "-P", "-m", "model.train", *train_args]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        changed = sc.change_at is None
        while proc.poll() is None:
            if not changed and _last_step(metrics) >= (sc.change_at or 0):
                _write_json(controls, {"lr": sc.start_lr, **sc.change})
                changed = True
            time.sleep(0.05)
        if proc.returncode != 0:
            raise SystemExit(f"{sc.name}: the trainer exited {proc.returncode}")
        if sc.resume_steps:  # a second attempt appending to the same metrics file
            last = sorted((tmp / "out" / "checkpoints").glob("step-*.pt"))[-1]
            again = [*cmd, "--resume", str(last), "--steps", str(sc.resume_steps)]
            if subprocess.run(again, cwd=ROOT, env=env, stdout=subprocess.DEVNULL).returncode:
                raise SystemExit(f"{sc.name}: the resumed trainer failed")
        out = CORPUS / f"real_{sc.name}.jsonl"
        lines = [json.loads(s) for s in metrics.read_text().splitlines() if s.strip()]
        out.write_text("".join(json.dumps(_round(o), separators=(",", ":")) + "\n" for o in lines))
        print(f"{sc.name}: recorded in {time.monotonic() - t0:.0f} s -> {out.relative_to(ROOT)}")
        return out


# -- summaries (what the labels are based on) -----------------------------------------------


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    return None


def summarise(path: Path) -> str:
    rows = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    train = [r for r in rows if "event" not in r and "loss" in r]
    evals = [r for r in rows if "event" not in r and "avg_bit_acc" in r]
    loss = [(r["step"], _num(r["loss"]) or math.nan) for r in train]
    grad = [(r["step"], _num(r["grad_norm"]) or 0.0) for r in train if "grad_norm" in r]
    acc = [(r["step"], float(r["avg_bit_acc"])) for r in evals]
    sps = [float(r["samples_per_s"]) for r in train if "samples_per_s" in r]
    ctl = [(i, r["applied"]) for i, r in enumerate(rows) if r.get("event") == "controls"]
    step_before = {}
    for i, _ in ctl:
        prev = [r["step"] for r in rows[:i] if isinstance(r.get("step"), int)]
        step_before[i] = prev[-1] if prev else 0
    finite = [(s, v) for s, v in loss if math.isfinite(v)]
    nonfinite = len(loss) - len(finite)
    lmin = min(finite, key=lambda p: p[1])
    gmax = max(grad, key=lambda p: p[1])
    gmed = statistics.median(v for _, v in grad)
    ts = [float(r["t"]) for r in rows]
    gap = max((b - a, i) for i, (a, b) in enumerate(itertools.pairwise(ts)))
    out = [
        f"== {path.name}: {len(rows)} lines, {len(train)} train, {len(evals)} evals",
        f"  loss start {loss[0][1]:.4f} (step {loss[0][0]}), min {lmin[1]:.4f} (step "
        f"{lmin[0]}), end {loss[-1][1]:.4f}; nonfinite: {nonfinite}",
        f"  grad_norm median {gmed:.3g}, max {gmax[1]:.3g} (step {gmax[0]}), "
        f"min {min(v for _, v in grad):.3g}, last {grad[-1][1]:.3g}",
        f"  samples_per_s median {statistics.median(sps):.0f}, min {min(sps):.0f}; "
        f"largest gap in t {gap[0]:.2f} s after line {gap[1]}",
    ]
    if acc:
        best = max(acc, key=lambda p: p[1])
        out.append(
            f"  avg_bit_acc best {best[1]:.4f} (step {best[0]}), last {acc[-1][1]:.4f}; "
            f"all: {' '.join(f'{s}:{a:.3f}' for s, a in acc)}"
        )
    for i, applied in ctl:
        out.append(f"  controls after step {step_before[i]}: {json.dumps(applied)}")
    out.append("  loss: " + " ".join(f"{s}:{v:.3f}" for s, v in loss[:: max(1, len(loss) // 30)]))
    out.append("  grad: " + " ".join(f"{s}:{v:.2g}" for s, v in grad[:: max(1, len(grad) // 30)]))
    return "\n".join(out)


def merge_labels(names: list[str]) -> None:
    labels: dict[str, Any] = json.loads(LABELS.read_text()) if LABELS.exists() else {}
    for sc in SCENARIOS:
        if sc.name in names:
            labels[f"real_{sc.name}.jsonl"] = sc.label
    LABELS.write_text(json.dumps(dict(sorted(labels.items())), indent=1) + "\n")


def main(argv: list[str]) -> int:
    known = {sc.name: sc for sc in SCENARIOS}
    if argv[:1] == ["--labels"]:  # rewrite the real labels in labels.json, record nothing
        merge_labels(list(known))
        return 0
    if argv[:1] == ["--summary"]:
        for sc in SCENARIOS:
            path = CORPUS / f"real_{sc.name}.jsonl"
            if path.exists() and (not argv[1:] or sc.name in argv[1:]):
                print(summarise(path))
        return 0
    names = argv or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {sorted(known)}")
    CORPUS.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(summarise(record(known[name])), flush=True)
    merge_labels(names)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
