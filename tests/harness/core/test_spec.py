"""Run specs, presets and ``--set`` overrides: what a user types and the one-line errors."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from harness.core.spec import RunSpec, apply_overrides, args_to_flags
from harness.errors import NotFoundError, SpecError
from harness.runtime.specs import list_presets, load_preset, load_spec, resolve_command

MINIMAL = 'name = "echo"\ncommand = ["{python}", "-c", "pass"]\n'


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, name: str = "echo.toml") -> RunSpec:
    return load_spec(str(write(tmp_path / name, text)))[0]


def spec_error(tmp_path: Path, text: str, name: str = "echo.toml") -> str:
    with pytest.raises(SpecError) as info:
        load_text(tmp_path, text, name)
    return str(info.value)


def base() -> RunSpec:
    return RunSpec(name="echo", command=["python"])


# -- loading a spec file ------------------------------------------------------------------


def test_a_full_spec_loads_with_its_values_and_defaults(tmp_path: Path) -> None:
    spec = load_text(
        tmp_path,
        MINIMAL
        + 'device = "cuda:1"\n[watch]\nmin_util = 0.5\nstall_s = 30\n'
        + '[gates]\navg_bit_acc = ">= 0.93"\n[controls]\nlr = 0.001\n[args]\nsteps = 10\n',
    )
    assert spec.device == "cuda:1"
    assert (spec.watch.min_util, spec.watch.stall_s, spec.watch.util_grace_s) == (0.5, 30.0, 60.0)
    assert [str(g) for g in spec.parsed_gates()] == ["avg_bit_acc >= 0.93"]
    assert spec.controls == {"lr": 0.001}
    assert args_to_flags(spec.args) == ["--steps", "10"]


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    msg = spec_error(tmp_path, MINIMAL + "[watch]\nmin_utl = 0.5\n")
    assert msg.endswith("echo.toml: unknown key 'watch.min_utl'")


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    assert "unknown key 'stepz'" in spec_error(tmp_path, MINIMAL + "stepz = 3\n")


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('min_util = "0.5"', "watch.min_util"),  # a string is not a number
        ("min_util = true", "watch.min_util"),  # nor is a boolean
        ("stall_s = [1]", "watch.stall_s"),
        ('nonfinite = "ignore"', "watch.nonfinite"),
        ("stall_s = inf", "watch.stall_s"),
        ("stall_s = nan", "watch.stall_s"),
        ("min_util = 1.5", "watch.min_util"),
        ("stall_s = 0", "watch.stall_s"),
    ],
)
def test_wrong_type_or_range_names_the_key_and_the_value(
    tmp_path: Path, line: str, key: str
) -> None:
    msg = spec_error(tmp_path, MINIMAL + f"[watch]\n{line}\n")
    assert f"echo.toml: {key}:" in msg
    assert "(got " in msg


def test_missing_command_is_named(tmp_path: Path) -> None:
    assert "missing required key 'command'" in spec_error(tmp_path, 'name = "echo"\n')


@pytest.mark.parametrize("command", ["[]", '[""]', '["  ", "x"]', '"python train.py"'])
def test_empty_or_malformed_command_is_refused(tmp_path: Path, command: str) -> None:
    msg = spec_error(tmp_path, f'name = "echo"\ncommand = {command}\n')
    assert "echo.toml: command:" in msg


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ('"about 0.9"', "expected an operator and a number"),
        ('">= high"', "threshold must be a number"),
        ('"=> 0.9"', "expected an operator"),
        ('">= nan"', "finite"),
        ("0.9", "valid string"),
    ],
)
def test_bad_gate_expression_is_refused_with_the_metric(
    tmp_path: Path, expr: str, why: str
) -> None:
    msg = spec_error(tmp_path, MINIMAL + f"[gates]\navg_bit_acc = {expr}\n")
    assert "avg_bit_acc" in msg
    assert why in msg


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_known_devices_load(tmp_path: Path, device: str) -> None:
    assert load_text(tmp_path, MINIMAL + f'device = "{device}"\n').device == device


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:0 ", "mps"])
def test_unknown_devices_are_refused(tmp_path: Path, device: str) -> None:
    msg = spec_error(tmp_path, MINIMAL + f'device = "{device}"\n')
    assert "device: must be auto, cpu, cuda or cuda:N" in msg
    assert msg.count("got") == 1


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "..", ".", ".hidden", "x..y", "a\\n", "", "a" * 65]
)
def test_a_name_that_could_leave_the_runs_dir_is_refused(tmp_path: Path, name: str) -> None:
    msg = spec_error(tmp_path, f'name = "{name}"\ncommand = ["python"]\n')
    assert "echo.toml: name: must be 1-64 letters" in msg


def test_args_must_be_scalars(tmp_path: Path) -> None:
    msg = spec_error(tmp_path, MINIMAL + "[args]\nlayers = [1, 2]\n")
    assert msg.endswith("args: layers: expected a string, number or boolean, got list")


def test_controls_refuse_values_json_cannot_hold(tmp_path: Path) -> None:
    msg = spec_error(tmp_path, MINIMAL + "[controls]\nstart = 1979-05-27\n")
    assert "controls: start: dates and times are not allowed" in msg


def test_not_toml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    msg = spec_error(tmp_path, "name = \n")
    assert "echo.toml: not valid TOML" in msg


def test_missing_file_is_not_found_and_a_directory_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such spec file"):
        load_spec(str(tmp_path / "nope.toml"))
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(str(tmp_path / "dir.toml"))


def test_a_directory_named_like_a_preset_does_not_shadow_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cpu-burn").mkdir()
    monkeypatch.chdir(tmp_path)
    spec, source = load_spec("cpu-burn")
    assert (spec.name, source) == ("cpu-burn", "preset cpu-burn")


# -- --set overrides ----------------------------------------------------------------------


def test_set_reaches_watch_controls_args_gates_and_env() -> None:
    spec = apply_overrides(
        base(),
        [
            "watch.min_util=0.5",
            "controls.lr=0.01",
            "controls.data_weights={ echo = 2, not = 1 }",
            "args.steps=200",
            "args.compile=true",
            "args.task=echo",
            "gates.avg_bit_acc=>= 0.9",
            "env.OMP_NUM_THREADS=1",
        ],
    )
    assert spec.watch.min_util == 0.5
    assert spec.controls == {"lr": 0.01, "data_weights": {"echo": 2, "not": 1}}
    assert spec.args == {"steps": 200, "compile": True, "task": "echo"}
    assert [str(g) for g in spec.parsed_gates()] == ["avg_bit_acc >= 0.9"]
    assert spec.env == {"OMP_NUM_THREADS": "1"}  # text, although 1 is a TOML number
    assert base().watch.min_util == 0.8  # the original spec is untouched


def test_set_values_are_toml() -> None:
    spec = apply_overrides(
        base(),
        ["args.a=3", "args.b=2.5", "args.c=false", "args.d=hello world", "args.e='quoted'"],
    )
    assert spec.args == {"a": 3, "b": 2.5, "c": False, "d": "hello world", "e": "quoted"}
    assert args_to_flags(spec.args) == [
        "--a",
        "3",
        "--b",
        "2.5",
        "--d",
        "hello world",
        "--e",
        "quoted",
    ]


def test_set_text_fields_take_the_text_as_written() -> None:
    spec = apply_overrides(base(), ["name=2024", "key_metric=1", "device=cpu"])
    assert (spec.name, spec.key_metric, spec.device) == ("2024", "1", "cpu")


@pytest.mark.parametrize("key", ["watch.min_utl", "steps", "watchx.min_util", "watch.x.y"])
def test_set_unknown_key_is_refused_with_its_name(key: str) -> None:
    with pytest.raises(SpecError) as info:
        apply_overrides(base(), [f"{key}=1"])
    assert str(info.value) == f"--set: unknown key {key!r}"


@pytest.mark.parametrize(
    ("item", "key"),
    [
        ("watch.min_util=1.5", "watch.min_util"),
        ("watch.stall_s=soon", "watch.stall_s"),
        ("watch.nonfinite=ignore", "watch.nonfinite"),
        ("device=gpu", "device"),
        ("name=../x", "name"),
        ("gates.acc=about", "gates"),
        ("controls.when=1979-05-27", "controls"),
    ],
)
def test_set_value_that_fails_validation_names_the_key(item: str, key: str) -> None:
    with pytest.raises(SpecError) as info:
        apply_overrides(base(), [item])
    assert str(info.value).startswith(f"--set: {key}")


@pytest.mark.parametrize("item", ["watch.min_util", "=3", "  =3"])
def test_set_without_key_or_value_is_refused(item: str) -> None:
    with pytest.raises(SpecError, match="expected key=value"):
        apply_overrides(base(), [item])


def test_set_into_a_value_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(SpecError, match=r"'watch\.min_util' is not a table"):
        apply_overrides(base(), ["watch.min_util.x=1"])


# -- presets ------------------------------------------------------------------------------


BUILTIN = sorted(
    p.name.removesuffix(".toml")
    for p in resources.files("harness").joinpath("presets").iterdir()
    if p.name.endswith(".toml")
)


def test_there_are_builtin_presets() -> None:
    assert "cpu-burn" in BUILTIN


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_preset_loads(name: str) -> None:
    spec, source = load_spec(name)
    assert source == f"preset {name}"
    assert spec.name
    for gate in spec.parsed_gates():
        assert gate.metric in spec.gates
    assert resolve_command(spec.command, run_dir=Path("/tmp"))[0] == sys.executable


def test_presets_list_builtins_and_the_user_dir_and_the_user_wins(tmp_path: Path) -> None:
    write(tmp_path / "mine.toml", 'name = "mine"\ncommand = ["python"]\n')
    write(tmp_path / "cpu-burn.toml", 'name = "my-burn"\ncommand = ["python"]\n')
    write(tmp_path / "notes.txt", "not a preset")

    listed = list_presets(tmp_path)

    assert listed["mine"] == str(tmp_path / "mine.toml")
    assert listed["cpu-burn"] == str(tmp_path / "cpu-burn.toml")
    assert "notes" not in listed
    assert set(BUILTIN) <= set(listed)
    assert load_spec("cpu-burn", presets_dir=tmp_path)[0].name == "my-burn"
    assert load_spec("cpu-burn")[0].name == "cpu-burn"
    assert list_presets(tmp_path / "missing") == dict.fromkeys(BUILTIN, "built-in")


def test_unknown_preset_lists_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path / "mine.toml", 'name = "mine"\ncommand = ["python"]\n')
    with pytest.raises(NotFoundError) as info:
        load_spec("ecko", presets_dir=tmp_path)
    msg = str(info.value)
    assert "'ecko'" in msg
    assert "cpu-burn" in msg
    assert "mine" in msg


def test_a_broken_user_preset_names_its_file(tmp_path: Path) -> None:
    write(tmp_path / "bad.toml", 'name = "bad"\ncommand = ["python"]\n[watch]\nmin_utl = 1\n')
    with pytest.raises(SpecError) as info:
        load_spec("bad", presets_dir=tmp_path)
    assert str(info.value) == f"{tmp_path / 'bad.toml'}: unknown key 'watch.min_utl'"


@pytest.mark.parametrize("ref", ["../etc/spec", "/etc/passwd", "x.toml", "../presets/mine"])
def test_load_preset_never_reads_a_path(tmp_path: Path, ref: str) -> None:
    presets = tmp_path / "presets"
    presets.mkdir()
    write(presets / "mine.toml", 'name = "mine"\ncommand = ["python"]\n')
    write(tmp_path / "x.toml", 'name = "x"\ncommand = ["python"]\n')
    with pytest.raises(NotFoundError, match="no spec file or preset named"):
        load_preset(ref, presets_dir=presets)
    assert load_preset("mine", presets_dir=presets)[0].name == "mine"


# -- the command ---------------------------------------------------------------------------


def test_resolve_command_expands_placeholders_and_appends_args(tmp_path: Path) -> None:
    words = resolve_command(
        ["{python}", "-m", "model.train", "--out", "{run_dir}/ckpt"],
        run_dir=tmp_path,
        args={"seq_len": 32, "compile": True, "debug": False},
    )
    assert words == [
        sys.executable,
        "-m",
        "model.train",
        "--out",
        f"{tmp_path}/ckpt",
        "--seq-len",
        "32",
        "--compile",
    ]


def test_resolve_command_refuses_a_missing_program(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found on PATH"):
        resolve_command(["no-such-program-xyz"], run_dir=tmp_path)
    with pytest.raises(SpecError, match="does not exist"):
        resolve_command([str(tmp_path / "nope")], run_dir=tmp_path)


def test_a_spec_survives_the_json_round_trip_of_the_database() -> None:
    spec = apply_overrides(base(), ["watch.stall_s=30", "controls.lr=0.01", "args.x=true"])
    assert RunSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_builtin_preset_loads_with_an_empty_or_missing_user_folder(tmp_path: Path) -> None:
    for folder in (tmp_path / "missing", tmp_path):
        spec, source = load_preset("cpu-burn", presets_dir=folder)
        assert spec.name == "cpu-burn" and source == "preset cpu-burn"
        spec, source = load_spec("cpu-burn", presets_dir=folder)
        assert spec.name == "cpu-burn"


def test_set_of_a_typed_arg_uses_the_chat_rules() -> None:
    spec = RunSpec.model_validate({"name": "x", "command": ["python"]})
    assert apply_overrides(spec, ["args.steps=200"]).args["steps"] == 200
    with pytest.raises(SpecError, match=r"args.steps: expected a positive integer, got 'abc'"):
        apply_overrides(spec, ["args.steps=abc"])
    with pytest.raises(SpecError, match=r"args.lr: expected a positive number"):
        apply_overrides(spec, ["args.lr=-1"])


def test_unknown_launchers_are_refused_not_run_locally() -> None:
    from harness.core.spec import spec_from_mapping

    with pytest.raises(SpecError, match=r"launcher: Input should be 'local', 'torchrun' or"):
        spec_from_mapping({"name": "x", "command": ["python"], "launcher": "k8s"}, source="t")


def test_a_slurm_table_takes_sbatch_words_and_refuses_anything_shell_like() -> None:
    from harness.core.spec import spec_from_mapping

    def slurm(table: dict[str, Any]) -> Any:
        data = {"name": "x", "command": ["python"], "launcher": "slurm", "slurm": table}
        return spec_from_mapping(data, source="s.toml").slurm

    cfg = slurm(
        {
            "partition": "gpu",
            "nodes": 2,
            "gpus_per_node": 4,
            "time": "1-12:00:00",
            "mem": "64G",
            "extra": ["--constraint=a100", "--exclusive"],
            "requeue_on": ["NODE_FAIL", "PREEMPTED"],
        }
    )
    assert (cfg.nodes, cfg.gpus_per_node, cfg.requeue_limit) == (2, 4, 3)
    bad = {
        "--wrap=rm": r"slurm.extra: '--wrap=rm': --wrap is set by the launcher",
        "--comment=a b": r"no spaces, quotes or shell characters",
        "--x=$(id)": r"no spaces, quotes or shell characters",
        "-p gpu": r"each entry must be one sbatch option",
    }
    for option, message in bad.items():
        with pytest.raises(SpecError, match=message):
            slurm({"extra": [option]})
    with pytest.raises(SpecError, match=r"s.toml: slurm.time: must be a time limit"):
        slurm({"time": "forever"})
    with pytest.raises(SpecError, match=r"slurm.partition: must be one word"):
        slurm({"partition": "gpu;reboot"})
    with pytest.raises(SpecError, match=r"slurm.mem: must be a size"):
        slurm({"mem": "lots"})
    with pytest.raises(SpecError, match=r"slurm.requeue_on.0: Input should be 'NODE_FAIL'"):
        slurm({"requeue_on": ["TIMEOUT"]})  # it would run out of time again


# -- nesting, sizes and odd files: one line, never a traceback -------------------------------


def deep(n: int, open_: str = "[", close: str = "]") -> str:
    return open_ * n + close * n


@pytest.mark.parametrize("depth", [5000, 600])
def test_an_array_too_deep_to_parse_names_the_file_line_and_key(tmp_path: Path, depth: int) -> None:
    text = MINIMAL + f"\n[controls]\nlr = 0.1\nweights = {deep(depth)}\n"
    message = spec_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'echo.toml'}: line 6: controls.weights: nested too")
    assert "\n" not in message and len(message) < 300


def test_an_inline_table_too_deep_to_parse_is_one_line_too(tmp_path: Path) -> None:
    text = MINIMAL + '[controls]\nmix = { note = "[[[[", inner = ' + "{a = " * 3000
    text += "1" + "}" * 3000 + " }\n"
    message = spec_error(tmp_path, text)
    assert "line 4: controls.mix: nested too deeply" in message and "\n" not in message


def test_a_deep_array_that_parses_is_refused_by_key(tmp_path: Path) -> None:
    message = spec_error(tmp_path, MINIMAL + f"[controls]\nweights = {deep(100)}\n")
    assert message == (
        f"{tmp_path / 'echo.toml'}: controls: weights: nested more than 32 levels deep "
        "(arrays or tables in one another)"
    )
    spec = load_text(tmp_path, MINIMAL + f"[controls]\nweights = {deep(30)}\n")
    assert spec.controls["weights"][0][0][0] == [
        [[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]
    ]


def test_a_deep_override_is_one_line() -> None:
    with pytest.raises(SpecError, match=r"^--set: controls.w: nested too deeply to read$"):
        apply_overrides(base(), [f"controls.w={deep(5000)}"])
    with pytest.raises(SpecError, match=r"^--set: controls: w: nested more than 32 levels"):
        apply_overrides(base(), [f"controls.w={deep(50)}"])


def test_a_huge_bad_value_is_clipped_in_the_message(tmp_path: Path) -> None:
    message = spec_error(tmp_path, f'name = "{"x" * 100_000}"\ncommand = ["python"]\n')
    assert message.startswith(f"{tmp_path / 'echo.toml'}: name: must be 1-64 letters")
    assert len(message) < 300


def test_a_spec_that_is_a_pipe_is_refused_without_reading_it(tmp_path: Path) -> None:
    fifo = tmp_path / "echo.toml"
    os.mkfifo(fifo)  # reading it would wait forever for a writer
    with pytest.raises(SpecError, match=r"echo.toml: not a regular file"):
        load_spec(str(fifo))
