"""Run specs (DESIGN section 4), validated with pydantic; pure, no files read here.

A spec is TOML. Unknown keys are errors naming the key and the file; every error is one
line: ``echo.toml: watch.min_util: must be between 0 and 1, got 1.5``. ``--set
key=value`` overrides take dotted keys (``watch.min_util=0.5``, ``controls.lr=0.01``,
``args.steps=200``) with TOML values; a word that is not TOML is a string, and keys that
hold text (``name``, ``env.*``, ``gates.*``) take the text as written. Values must be
finite numbers; booleans and strings are not numbers. Reading spec files and presets is
``harness.runtime.specs``.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.core.overrides import TYPED_SPEC_KEYS
from harness.core.values import toml_value
from harness.errors import InputError, SpecError
from memory import clip

__all__ = [
    "MAX_DEPTH",
    "SLURM_STATES",
    "DiagnoseConfig",
    "Gate",
    "RollbackConfig",
    "RunSpec",
    "SlurmConfig",
    "SpecError",
    "TorchrunConfig",
    "WatchConfig",
    "apply_overrides",
    "args_to_flags",
    "control_problem",
    "parse_gate",
    "spec_from_mapping",
    "spec_from_toml",
    "toml_loads",
]

#: how deep arrays and tables may nest in a value a spec hands on (controls)
MAX_DEPTH = 32
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_GATE_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    def passes(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def parse_gate(metric: str, expr: str) -> Gate:
    m = _GATE_RE.match(expr)
    if not m:
        raise ValueError(f"expected an operator and a number such as '>= 0.93', got {expr!r}")
    try:
        threshold = float(m.group(2))
    except ValueError:
        raise ValueError(f"threshold must be a number, got {m.group(2)!r}") from None
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {m.group(2)!r}")
    return Gate(metric, m.group(1), threshold)


class _Strict(BaseModel):
    # strict: `min_util = true` or `stall_s = "120"` is a mistake, not a number (an int is
    # still accepted where a float is expected). No inf/nan: a spec must survive JSON.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class WatchConfig(_Strict):
    """Thresholds of the rules; every one has a default."""

    min_util: float = Field(0.80, ge=0.0, le=1.0)
    util_grace_s: float = Field(60.0, ge=0.0)
    util_window_s: float = Field(30.0, gt=0.0)
    min_ram_free_gb: float = Field(4.0, ge=0.0)
    stall_s: float = Field(120.0, gt=0.0)
    nonfinite: Literal["abort", "warn"] = "abort"
    sample_every_s: float = Field(1.0, gt=0.0, le=60.0)
    int_grace_s: float = Field(10.0, ge=0.0)  # after SIGINT, before SIGTERM
    term_grace_s: float = Field(5.0, ge=0.0)  # after SIGTERM, before SIGKILL
    # a GPU job whose utilisation cannot be read: "required" refuses the launch (or aborts
    # the run), "optional" runs it unjudged with one warning
    gpu_probe: Literal["required", "optional"] = "required"
    gpu_mem_warn: float = Field(0.95, ge=0.0, le=1.0)  # share of a GPU's memory; 0: never


class TorchrunConfig(_Strict):
    """``[torchrun]``: how ``launcher = "torchrun"`` runs the command (``python -m
    torch.distributed.run``); ignored by the other launchers."""

    nproc_per_node: int = Field(1, ge=1, le=1024)  # worker processes (ranks) on this machine
    # true: a private rendezvous on a free port (--standalone); false: torchrun's default,
    # a static rendezvous on MASTER_PORT (29500 unless the spec's env sets it)
    standalone: bool = True
    # torchrun restarts the whole worker group this often when a rank fails (--max-restarts)
    max_restarts: int = Field(0, ge=0, le=100)
    monitor_interval_s: float = Field(0.1, gt=0.0, le=60.0)  # how often torchrun polls ranks


#: the end states of a Slurm job the harness may resubmit (``[slurm] requeue_on``): the
#: ones that are not the job's doing (a job that ran out of time or memory would again)
RequeueState = Literal["NODE_FAIL", "PREEMPTED", "BOOT_FAIL"]
SLURM_STATES: tuple[str, ...] = get_args(RequeueState)
_SLURM_WORD = re.compile(r"^[A-Za-z0-9_.:,+%@/=-]{1,200}$")  # a partition, account, qos
# an extra sbatch option: --word or --word=value, where the value is one plain word
_SBATCH_OPTION = re.compile(r"^--[a-z][a-z0-9-]{0,40}(=[A-Za-z0-9_.:,+%@/=\-\[\]]{1,200})?$")
_SBATCH_OWN = {  # options the launcher writes itself: a second value would fight them
    "job-name",
    "output",
    "error",
    "chdir",
    "parsable",
    "wrap",
    "export",
    "partition",
    "nodes",
    "ntasks-per-node",
    "gpus-per-node",
    "cpus-per-task",
    "mem",
    "time",
    "account",
    "qos",
    "requeue",
    "no-requeue",
}


class SlurmConfig(_Strict):
    """``[slurm]``: how ``launcher = "slurm"`` submits the job (``sbatch``); ignored by the
    other launchers. Every value is passed to ``sbatch`` as one word, never through a
    shell; an option left out is Slurm's (or the cluster's) default."""

    partition: str | None = None
    nodes: int = Field(1, ge=1, le=100_000)
    ntasks_per_node: int = Field(1, ge=1, le=4096)
    gpus_per_node: int = Field(0, ge=0, le=1024)  # 0: no --gpus-per-node
    cpus_per_task: int | None = Field(None, ge=1, le=100_000)
    mem: str | None = None  # as sbatch takes it: "16G", "4000M", "0" (all of the node)
    time: str | None = None  # as sbatch takes it: "30", "2:00:00", "1-12:00:00"
    account: str | None = None
    qos: str | None = None
    extra: list[str] = Field(default_factory=list)  # further options: ["--constraint=a100"]
    # end states after which the harness resubmits the job from its last checkpoint event
    requeue_on: list[RequeueState] = Field(default_factory=list)
    requeue_limit: int = Field(3, ge=0, le=100)
    poll_s: float = Field(2.0, ge=0.2, le=60.0)  # how often squeue is asked

    @field_validator("partition", "account", "qos")
    @classmethod
    def _plain_word(cls, v: str | None) -> str | None:
        if v is not None and not _SLURM_WORD.fullmatch(v):
            raise ValueError("must be one word of letters, digits and _ . : , + % @ / = -")
        return v

    @field_validator("mem")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d{1,12}[KMGT]?", v):
            raise ValueError("must be a size as sbatch takes it, such as '16G' or '4000M'")
        return v

    @field_validator("time")
    @classmethod
    def _time_limit(cls, v: str | None) -> str | None:
        # sbatch's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
        if v is not None and not re.fullmatch(r"(\d{1,5}-)?\d{1,6}(:\d{1,2}){0,2}", v):
            raise ValueError(
                "must be a time limit as sbatch takes it: '30', '2:00:00', '1-12:00:00'"
            )
        return v

    @field_validator("extra")
    @classmethod
    def _extra_options(cls, v: list[str]) -> list[str]:
        for option in v:
            if not _SBATCH_OPTION.fullmatch(option):
                raise ValueError(
                    f"{option!r}: each entry must be one sbatch option, '--name' or "
                    "'--name=value' with a plain value (no spaces, quotes or shell characters)"
                )
            name = option[2:].split("=", 1)[0]
            if name in _SBATCH_OWN:
                raise ValueError(
                    f"{option!r}: --{name} is set by the launcher (use the [slurm] key "
                    "of that name, where there is one)"
                )
        return v


#: what the supervisor does when the live diagnosis finds a symptom (``[diagnose]``)
Policy = Literal["off", "warn", "abort", "rollback"]


class RollbackConfig(_Strict):
    """``[diagnose.rollback]``: restart from the last checkpoint before the onset."""

    lr_factor: float = Field(0.5, gt=0.0, le=1.0)  # the lr at that checkpoint, times this
    max: int = Field(2, ge=0, le=20)  # rollbacks per run; then the symptom aborts the run


class DiagnoseConfig(_Strict):
    """``[diagnose]``: a policy per symptom of the live diagnosis (``docs/diagnosis.md``).

    The defaults never abort a healthy run: a warning (an alert with the diagnosis, an
    incident, a line in the heartbeat) for most, an abort for divergence. ``nonfinite``
    and ``stall`` are the watch rules' (``watch.nonfinite``, ``watch.stall_s``), which act
    on them already; the diagnosis only explains them, here and in ``harness diagnose``.
    """

    loss_spike: Policy = "warn"
    divergence: Policy = "abort"
    no_progress: Policy = "warn"
    grad_explosion: Policy = "warn"
    vanishing_gradient: Policy = "warn"
    metric_collapse: Policy = "warn"
    overfitting: Policy = "warn"
    degenerate_metric: Policy = "warn"
    throughput_drop: Policy = "warn"
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)

    def policies(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if isinstance(v, str)}


class RunSpec(_Strict):
    name: str
    command: list[str] = Field(min_length=1)
    device: str = "auto"
    launcher: Literal["local", "torchrun", "slurm"] = "local"
    preflight: list[list[str]] = Field(default_factory=list)
    preflight_timeout_s: float = Field(300.0, gt=0.0)
    args: dict[str, str | int | float | bool] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    watch: WatchConfig = Field(default_factory=WatchConfig)
    torchrun: TorchrunConfig = Field(default_factory=TorchrunConfig)
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    diagnose: DiagnoseConfig = Field(default_factory=DiagnoseConfig)
    # how the command resumes from a checkpoint: appended to it, "{checkpoint}" replaced by
    # the checkpoint's path (a rollback needs it)
    resume: list[str] = Field(default_factory=list)
    gates: dict[str, str] = Field(default_factory=dict)
    controls: dict[str, Any] = Field(default_factory=dict)
    key_metric: str | None = None  # shown with a sparkline in heartbeats; default: first gate

    @field_validator("name")
    @classmethod
    def _name_is_safe(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v) or ".." in v:
            raise ValueError(
                "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return v

    @model_validator(mode="after")
    def _rollback_can_resume(self) -> RunSpec:
        rolling = [k for k, v in self.diagnose.policies().items() if v == "rollback"]
        if rolling and not any("{checkpoint}" in word for word in self.resume):
            raise ValueError(
                f"diagnose.{rolling[0]} = 'rollback' needs resume, the arguments that resume "
                "the command from a checkpoint, with {checkpoint} in them (for example "
                'resume = ["--resume", "{checkpoint}"])'
            )
        return self

    @field_validator("device")
    @classmethod
    def _device_known(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return v

    @field_validator("command")
    @classmethod
    def _command_words(cls, v: list[str]) -> list[str]:
        if not v[0].strip():
            raise ValueError("the first word (the program) is empty")
        return v

    @field_validator("args", mode="before")
    @classmethod
    def _args_scalar(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            for key, value in v.items():
                if not isinstance(value, str | int | float | bool):
                    raise ValueError(
                        f"{key}: expected a string, number or boolean, got {type(value).__name__}"
                    )
        return v

    @field_validator("controls", mode="before")
    @classmethod
    def _controls_json(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            for key, value in v.items():
                bad = control_problem(value)
                if bad:
                    raise ValueError(f"{key}: {bad}")
        return v

    @field_validator("gates")
    @classmethod
    def _gates_parse(cls, v: dict[str, str]) -> dict[str, str]:
        for metric, expr in v.items():
            if not isinstance(expr, str):
                raise ValueError(f"{metric}: expected a string such as '>= 0.93'")
            try:
                parse_gate(metric, expr)
            except ValueError as exc:
                raise ValueError(f"{metric}: {exc}") from None
        return v

    @property
    def shown_metric(self) -> str | None:
        """The metric shown with a sparkline: ``key_metric``, else the first gate's metric."""
        return self.key_metric or next(iter(self.gates), None)

    def parsed_gates(self) -> list[Gate]:
        return [parse_gate(k, v) for k, v in self.gates.items()]


def control_problem(value: Any, depth: int = 1) -> str | None:
    """Why ``value`` cannot go into controls.json (TOML dates, inf/nan, deep nesting), or None.

    The rule for every control value, from a spec, ``--set`` or ``harness controls set``.
    """
    if depth > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep (arrays or tables in one another)"
    if isinstance(value, dt.date | dt.time):
        return "dates and times are not allowed (quote the value to pass text)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if isinstance(value, Mapping):
        return next(
            (f"{k}: {b}" for k, x in value.items() if (b := control_problem(x, depth + 1))), None
        )
    if isinstance(value, list):
        return next((b for x in value if (b := control_problem(x, depth + 1))), None)
    return None


def _describe(exc: ValidationError, source: str) -> SpecError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = f"{source}: unknown key {loc!r}"
    elif kind == "missing":
        msg = f"{source}: missing required key {loc!r}"
    else:
        got = err.get("input")
        text = str(err["msg"]).removeprefix("Value error, ")
        if isinstance(got, dict | list) and kind == "value_error":
            shown = ""  # our validators name the entry that is wrong
        elif isinstance(got, dict | list):
            shown = f" (got a {'table' if isinstance(got, dict) else 'list'})"
        else:
            shown = f" (got {clip(repr(got), 80)})"
        msg = f"{source}: {loc}: {text}{shown}"
    more = len(exc.errors()) - 1
    return SpecError(msg + (f"; and {more} more problem{'s' * (more > 1)}" if more else ""))


def spec_from_mapping(data: Mapping[str, Any], *, source: str) -> RunSpec:
    try:
        return RunSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise _describe(exc, source) from None


_TOML_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')
_TOML_HEADER = re.compile(r"\s*\[\[?([^\[\]]+)\]\]?\s*$")
_TOML_KEY = re.compile(r"\s*([^=\[\]{}]+?)\s*=(.*)$")


def _deepest(text: str) -> tuple[int, str]:
    """(line, dotted key) where brackets nest deepest in TOML text (strings skipped).

    A rough reading, used only to say where a value too deep to parse is.
    """
    table, key, depth = "", "", 0
    best = (0, 0, "")  # depth, line, key
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _TOML_STRING.sub('""', raw).split("#", 1)[0]
        if depth == 0:
            if header := _TOML_HEADER.match(line):
                table = header[1].strip()
                continue
            if assignment := _TOML_KEY.match(line):
                key = ".".join(p for p in (table, assignment[1].strip()) if p)
                line = assignment[2]
        for ch in line:
            if ch in "[{":
                depth += 1
                if depth > best[0]:
                    best = (depth, lineno, key)
            elif ch in "]}":
                depth = max(0, depth - 1)
    return best[1], best[2]


def toml_loads(text: str, *, source: str, error: type[InputError] = SpecError) -> dict[str, Any]:
    """``tomllib.loads`` whose every failure is one ``error`` line naming ``source``.

    Python's TOML reader recurses once per level of nesting: a value a few hundred
    levels deep would end in a RecursionError thousands of lines long. It is reported
    as the line and key where the nesting is, instead.
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: not valid TOML ({exc})") from None
    except RecursionError:
        line, key = _deepest(text)
        where = f"line {line}: {key}: " if key else f"line {line}: "
        raise error(
            f"{source}: {where}nested too deeply to read (keep arrays and tables within "
            f"{MAX_DEPTH} levels)"
        ) from None


def spec_from_toml(text: str, *, source: str) -> RunSpec:
    """A spec from TOML text; ``source`` names it in every error."""
    return spec_from_mapping(toml_loads(text, source=source), source=source)


def _override_value(raw: str, *, source: str, key: str) -> Any:
    try:
        return toml_value(raw)
    except RecursionError:
        raise SpecError(f"{source}: {key}: nested too deeply to read") from None


def _wants_text(annotation: Any) -> bool:
    """True for ``str`` and ``str | None`` fields: an override's text is taken as written."""
    return annotation is str or (
        get_origin(annotation) in (Union, UnionType)
        and set(get_args(annotation)) == {str, NoneType}
    )


def apply_overrides(spec: RunSpec, overrides: Sequence[str], *, source: str = "--set") -> RunSpec:
    """Apply ``key=value`` overrides; an unknown key or a bad value is a SpecError."""
    data = spec.model_dump()
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"{source}: expected key=value, got {item!r}")
        parts = key.split(".")
        node: Any = data
        model: Any = RunSpec
        text_values = False  # inside env/gates: every value is text
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            free_table = model is None  # inside controls/gates/env: any key
            if not free_table and part not in model.model_fields:
                raise SpecError(f"{source}: unknown key {key!r}")
            if last:
                value = _override_value(raw, source=source, key=key)
                as_text = (
                    text_values if free_table else _wants_text(model.model_fields[part].annotation)
                )
                if as_text and not isinstance(value, str):
                    value = raw.strip()
                rule = TYPED_SPEC_KEYS.get(key)
                if rule is not None:  # the same value rules as chat overrides
                    try:
                        value = rule(value)
                    except ValueError as exc:
                        raise SpecError(f"{source}: {key}: {exc}") from None
                node[part] = value
                break
            if not isinstance(node.get(part), dict):
                raise SpecError(f"{source}: {'.'.join(parts[: i + 1])!r} is not a table")
            annotation = None if free_table else model.model_fields[part].annotation
            is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            if not free_table and not is_model:
                text_values = get_origin(annotation) is dict and get_args(annotation)[1] is str
            model = annotation if is_model else None
            node = node[part]
    return spec_from_mapping(data, source=source)


def args_to_flags(args: Mapping[str, str | int | float | bool]) -> list[str]:
    """Spec args as flags: ``{"seq_len": 32, "compile": True}`` -> ``--seq-len 32 --compile``."""
    flags: list[str] = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False:
            flags += [flag, str(value)]
    return flags
