"""Each command handler, driven with specified fakes of discord.Interaction against a fake
service: what the user sees, what the service is asked, in which order."""

from __future__ import annotations

import logging
from typing import Any

import discord
import pytest

from bot import BotConfig, CommandError, build_tree

from .conftest import (
    ADMIN,
    GUILD,
    OPERATOR_ROLE,
    STRANGER,
    FakeService,
    command,
    make_interaction,
)

Tree = discord.app_commands.CommandTree[Any]

# (command path, keyword arguments, the service method it must call)
Case = tuple[str, dict[str, Any], str]
MUTATING: list[Case] = [
    ("run start", {"preset": "echo", "overrides": "steps=200"}, "start_run"),
    ("run abort", {"run": "echo-001", "reason": "loss flat"}, "abort_run"),
    ("controls set", {"run": "echo-001", "key": "lr", "value": "0.0005"}, "set_control"),
    ("heartbeat", {}, "heartbeat"),
]
READS: list[Case] = [
    ("run status", {"run": None}, "run_status"),
    ("run list", {}, "list_runs"),
    ("mistakes search", {"query": "gpu idle"}, "search_mistakes"),
    ("mistakes show", {"mistake_id": "M-015"}, "show_mistake"),
    ("incidents", {"run": None}, "incidents"),
    ("brief", {}, "brief"),
    ("tell", {"text": "back at 9"}, "tell"),
]


async def test_run_start_defers_first_then_shows_the_started_run(
    tree: Tree, service: FakeService
) -> None:
    fi = make_interaction(service.events)
    await command(tree, "run start").callback(
        fi.interaction, preset="echo", overrides="steps=200 lr=0.001"
    )
    assert service.events == ["defer", "service.start_run", "followup"]
    assert service.calls == [
        ("start_run", ("echo", {"steps": "200", "lr": "0.001"}), {"by": f"discord:{ADMIN}"})
    ]
    fi.interaction.response.defer.assert_awaited_once_with(ephemeral=False)
    embed = fi.embed()
    assert embed.title == "Started: echo · echo-003"
    assert "starting" in (embed.description or "")
    assert fi.followup_send.await_args.kwargs["ephemeral"] is False


async def test_run_status_of_one_run_and_of_all(tree: Tree, service: FakeService) -> None:
    one = make_interaction(service.events)
    await command(tree, "run status").callback(one.interaction, run="echo-001")
    embed = one.embed()
    assert embed.title == "echo-small · echo-001"
    assert "step 120/200" in (embed.description or "")
    assert [f.name for f in embed.fields][:1] == ["started"]

    every = make_interaction(service.events)
    await command(tree, "run status").callback(every.interaction, run=None)
    embed = every.embed()
    assert embed.title == "Active runs"
    assert "echo-001" in (embed.description or "") and "shift-002" in (embed.description or "")


async def test_run_list_shows_running_and_ended_runs(tree: Tree, service: FakeService) -> None:
    fi = make_interaction(service.events)
    await command(tree, "run list").callback(fi.interaction)
    description = fi.embed().description or ""
    assert "`echo-001` **echo-small** running" in description
    assert "ok: avg_bit_acc 0.97 >= 0.93" in description


async def test_run_abort_passes_reason_and_author(tree: Tree, service: FakeService) -> None:
    fi = make_interaction(service.events, user_id=STRANGER, role_ids=(OPERATOR_ROLE,))
    await command(tree, "run abort").callback(fi.interaction, run="echo-001", reason="loss flat")
    assert service.calls == [
        ("abort_run", ("echo-001", "loss flat"), {"by": f"discord:{STRANGER}"})
    ]
    embed = fi.embed()
    assert embed.title == "Abort requested: echo-small · echo-001"
    assert "aborting" in (embed.description or "")


async def test_controls_set_shows_the_new_controls(tree: Tree, service: FakeService) -> None:
    fi = make_interaction(service.events)
    await command(tree, "controls set").callback(
        fi.interaction, run="echo-001", key="lr", value="0.0005"
    )
    assert service.calls[0][:2] == ("set_control", ("echo-001", "lr", "0.0005"))
    embed = fi.embed()
    assert embed.title == "Controls · echo-001"
    assert {f.name: f.value for f in embed.fields} == {"lr": "`0.0005`", "eval_every": "`50`"}


async def test_mistakes_search_and_show(tree: Tree, service: FakeService) -> None:
    search = make_interaction(service.events)
    await command(tree, "mistakes search").callback(search.interaction, query="gpu idle")
    embed = search.embed()
    assert [f.name for f in embed.fields] == [
        "mistake M-015 · GPU idle at 5 %",
        "incident 17 · utilisation abort",
    ]

    show = make_interaction(service.events)
    await command(tree, "mistakes show").callback(show.interaction, mistake_id=" M-015 ")
    embed = show.embed()
    assert embed.title == "M-015: GPU idle at 5 %"
    assert [(f.name, f.value) for f in embed.fields] == [
        ("Symptom", "5 % utilisation for hours"),
        ("Fix", "move the loss to the GPU"),
    ]


async def test_incidents_lists_newest_with_mistake_links(tree: Tree, service: FakeService) -> None:
    fi = make_interaction(service.events)
    await command(tree, "incidents").callback(fi.interaction, run=None)
    embed = fi.embed()
    lines = (embed.description or "").splitlines()
    assert lines[0].startswith("#17 <t:1700000100:R> **abort** device_util M-015 echo-001")
    assert lines[1].endswith("(resolved)")
    assert embed.colour is not None and embed.colour.value == 0xE74C3C  # unresolved abort


async def test_diagnose_shows_the_card_and_a_missing_run_is_one_line(
    tree: Tree, service: FakeService
) -> None:
    fi = make_interaction(service.events)
    await command(tree, "diagnose").callback(fi.interaction, run="echo-001")
    embed = fi.embed()
    assert embed.title == "Diagnosis · echo-001"
    assert embed.colour is not None and embed.colour.value == 0xE74C3C  # critical
    assert (embed.description or "").startswith("**unhealthy**\nQuick wins:\n• Set lr back")
    (field,) = embed.fields
    assert field.name == "divergence at step 612 (critical)"
    assert "1) **lr_change** (90%): set lr back to 0.001" in (field.value or "")
    assert "see M-049" in (field.value or "")
    bad = make_interaction(service.events)
    await command(tree, "diagnose").callback(bad.interaction, run="nope")
    assert "no run 'nope'" in bad.ephemeral_text()


async def test_heartbeat_and_brief(tree: Tree, service: FakeService) -> None:
    hb = make_interaction(service.events)
    await command(tree, "heartbeat").callback(hb.interaction)
    assert hb.embed().title == "Harness heartbeat · box"

    brief = make_interaction(service.events)
    await command(tree, "brief").callback(brief.interaction)
    fields = {f.name: f.value for f in brief.embed().fields}
    assert fields == {
        "Active runs": "echo-001 step 120/200",
        "Standing orders": "none",
        "Inbox": "#3 hi",
    }


async def test_tell_leaves_a_note_and_answers_privately(tree: Tree, service: FakeService) -> None:
    fi = make_interaction(service.events, user_id=STRANGER)
    await command(tree, "tell").callback(fi.interaction, text="back at 9, don't abort echo")
    assert service.calls == [
        ("tell", ("back at 9, don't abort echo",), {"author": f"discord:{STRANGER} (ada)"})
    ]
    fi.interaction.response.defer.assert_awaited_once_with(ephemeral=True)
    call = fi.followup_send.await_args
    assert call.kwargs["ephemeral"] is True
    assert "#42" in call.args[0]
    assert call.kwargs["allowed_mentions"].to_dict() == {"parse": []}  # never pings


@pytest.mark.parametrize(("path", "kwargs", "method"), MUTATING)
async def test_mutating_commands_refuse_strangers_and_log(
    tree: Tree,
    service: FakeService,
    caplog: pytest.LogCaptureFixture,
    path: str,
    kwargs: dict[str, Any],
    method: str,
) -> None:
    fi = make_interaction(service.events, user_id=STRANGER, role_ids=(999,))
    with caplog.at_level(logging.WARNING, logger="harness.bot"):
        await command(tree, path).callback(fi.interaction, **kwargs)
    assert service.calls == []
    assert service.events == ["send_message"]  # refused before deferring, nothing else
    assert fi.ephemeral_text() == f"You are not allowed to use /{path}."
    refusals = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(refusals) == 1
    assert str(STRANGER) in refusals[0].getMessage()
    assert f"/{path}" in refusals[0].getMessage()


@pytest.mark.parametrize(("path", "kwargs", "method"), MUTATING)
async def test_mutating_commands_pass_for_an_allowed_role(
    tree: Tree, service: FakeService, path: str, kwargs: dict[str, Any], method: str
) -> None:
    fi = make_interaction(service.events, user_id=STRANGER, role_ids=(555, OPERATOR_ROLE))
    await command(tree, path).callback(fi.interaction, **kwargs)
    assert [c[0] for c in service.calls] == [method]
    fi.embed()


@pytest.mark.parametrize(("path", "kwargs", "method"), MUTATING + READS)
async def test_an_empty_allow_list_refuses_every_mutating_command(
    service: FakeService, path: str, kwargs: dict[str, Any], method: str
) -> None:
    client = discord.Client(intents=discord.Intents(guilds=True))
    tree = build_tree(client, service, BotConfig(frozenset(), frozenset()))
    fi = make_interaction(service.events, user_id=ADMIN, role_ids=(OPERATOR_ROLE,))
    await command(tree, path).callback(fi.interaction, **kwargs)
    if (path, kwargs, method) in MUTATING:
        assert service.calls == []
        assert "not allowed" in fi.ephemeral_text()
    else:  # reads stay open when no read-list is set
        assert [c[0] for c in service.calls] == [method]


@pytest.mark.parametrize(("path", "kwargs", "method"), READS)
async def test_read_lists_restrict_reads(
    service: FakeService,
    caplog: pytest.LogCaptureFixture,
    path: str,
    kwargs: dict[str, Any],
    method: str,
) -> None:
    config = BotConfig(frozenset({ADMIN}), frozenset(), read_roles=frozenset({77}))
    tree = build_tree(discord.Client(intents=discord.Intents(guilds=True)), service, config)
    stranger = make_interaction(service.events, user_id=STRANGER, role_ids=(OPERATOR_ROLE,))
    with caplog.at_level(logging.WARNING, logger="harness.bot"):
        await command(tree, path).callback(stranger.interaction, **kwargs)
    assert service.calls == []
    assert "not allowed" in stranger.ephemeral_text()
    assert any(str(STRANGER) in r.getMessage() for r in caplog.records)

    reader = make_interaction(service.events, user_id=STRANGER, role_ids=(77,))
    await command(tree, path).callback(reader.interaction, **kwargs)
    admin = make_interaction(service.events, user_id=ADMIN)
    await command(tree, path).callback(admin.interaction, **kwargs)
    assert [c[0] for c in service.calls] == [method, method]


async def test_other_guilds_and_dms_are_refused(tree: Tree, service: FakeService) -> None:
    elsewhere = make_interaction(service.events, user_id=ADMIN, guild_id=GUILD + 1)
    await command(tree, "run list").callback(elsewhere.interaction)
    dm = make_interaction(service.events, user_id=ADMIN, guild_id=None, member=False)
    await command(tree, "run abort").callback(dm.interaction, run="echo-001", reason=None)
    assert service.calls == []
    assert (
        elsewhere.ephemeral_text()
        == dm.ephemeral_text()
        == ("This bot only answers in its own server.")
    )


async def test_a_user_in_dms_is_judged_by_id_alone(service: FakeService) -> None:
    tree = build_tree(
        discord.Client(intents=discord.Intents(guilds=True)),
        service,
        BotConfig(frozenset({ADMIN}), frozenset({OPERATOR_ROLE})),
    )
    dm = make_interaction(service.events, user_id=ADMIN, guild_id=None, member=False)
    await command(tree, "run abort").callback(dm.interaction, run="echo-001", reason=None)
    assert service.calls == [("abort_run", ("echo-001", ""), {"by": f"discord:{ADMIN}"})]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ("steps", "'steps' is not key=value"),
        ("steps=200 =5", "'=5' has an empty key"),
        ("steps=", "'steps' has no value"),
        ("steps=1 steps=2", "'steps' is given twice"),
        ("name='unclosed", "No closing quotation"),
        ("--rm=1", "'--rm' is not a valid key"),
    ],
)
async def test_bad_overrides_get_one_private_line_and_no_service_call(
    tree: Tree, service: FakeService, overrides: str, expected: str
) -> None:
    fi = make_interaction(service.events)
    await command(tree, "run start").callback(fi.interaction, preset="echo", overrides=overrides)
    assert service.calls == []
    assert service.events == ["send_message"]  # answered at once, never deferred
    text = fi.ephemeral_text()
    assert text.startswith("bad overrides: ")
    assert expected in text


async def test_a_command_error_from_the_service_is_shown_privately_as_is(
    tree: Tree, service: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    service.fail["start_run"] = CommandError("unknown override key 'foo'")
    fi = make_interaction(service.events)
    with caplog.at_level(logging.INFO, logger="harness.bot"):
        await command(tree, "run start").callback(fi.interaction, preset="echo", overrides="foo=1")
    # the public "thinking…" placeholder goes, so the error is not shown to the channel
    assert service.events == ["defer", "service.start_run", "delete_original", "followup"]
    assert fi.ephemeral_text() == "unknown override key 'foo'"
    assert not any(r.exc_info for r in caplog.records)


async def test_private_command_errors_keep_their_placeholder(
    tree: Tree, service: FakeService
) -> None:
    service.fail["tell"] = CommandError("inbox full")
    fi = make_interaction(service.events)
    await command(tree, "tell").callback(fi.interaction, text="hi")
    assert service.events == ["defer", "service.tell", "followup"]
    assert fi.ephemeral_text() == "inbox full"


async def test_an_unexpected_exception_is_answered_and_logged_with_its_trace(
    tree: Tree, service: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    service.fail["incidents"] = RuntimeError("database is locked")
    fi = make_interaction(service.events)
    with caplog.at_level(logging.ERROR, logger="harness.bot"):
        await command(tree, "incidents").callback(fi.interaction, run="echo-001")
    text = fi.ephemeral_text()
    assert text.startswith("internal error, logged as ")
    ref = text.removeprefix("internal error, logged as ")
    assert "database" not in text  # internals stay in the log
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert ref in record.getMessage() and "/incidents" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert "database is locked" in caplog.text  # the trace is in the log


async def test_tree_on_error_answers_errors_raised_before_the_handler(
    tree: Tree, service: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    cmd = command(tree, "run abort")
    fi = make_interaction(service.events)
    fi.interaction.command = cmd
    error = discord.app_commands.CommandInvokeError(cmd, ValueError("boom"))
    with caplog.at_level(logging.ERROR, logger="harness.bot"):
        await tree.on_error(fi.interaction, error)
    assert fi.ephemeral_text().startswith("internal error, logged as ")
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in caplog.records)

    stale = make_interaction(service.events)
    stale.interaction.command = cmd
    await tree.on_error(stale.interaction, discord.app_commands.CommandSignatureMismatch(cmd))
    assert "signature for command 'abort'" in stale.ephemeral_text()


async def test_a_failed_answer_is_logged_not_raised(
    tree: Tree, service: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    fi = make_interaction(service.events)
    # e.g. another process answered this interaction already
    gone = discord.InteractionResponded(fi.interaction)
    fi.interaction.response.defer.side_effect = gone
    fi.interaction.response.send_message.side_effect = gone
    with caplog.at_level(logging.WARNING, logger="harness.bot"):
        await command(tree, "brief").callback(fi.interaction)
    assert service.calls == []
    fi.interaction.response.send_message.assert_awaited_once()  # it did try to tell the user
    assert "could not answer user 1001" in caplog.text


async def test_autocomplete_presets_and_runs(tree: Tree, service: FakeService) -> None:
    assert command(tree, "run start").get_parameter("preset").autocomplete
    for path in ("run status", "run abort", "controls set", "incidents"):
        assert command(tree, path).get_parameter("run").autocomplete, path
    fi = make_interaction(service.events)
    # call the registered callbacks the way discord.py does: (interaction, current)
    preset_cb = command(tree, "run start")._params["preset"].autocomplete
    choices = await preset_cb(fi.interaction, "ECH")
    assert [c.value for c in choices] == ["echo", "echo-small"]
    assert [c.value for c in await preset_cb(fi.interaction, "")] == service.preset_names
    assert [c.value for c in await preset_cb(fi.interaction, "ft")] == ["shift"]

    run_cb = command(tree, "run abort")._params["run"].autocomplete
    assert [c.value for c in await run_cb(fi.interaction, "002")] == ["shift-002"]


async def test_autocomplete_offers_at_most_25(tree: Tree, service: FakeService) -> None:
    service.preset_names = [f"p{i:03d}" for i in range(60)]
    preset_cb = command(tree, "run start")._params["preset"].autocomplete
    fi = make_interaction(service.events)
    choices = await preset_cb(fi.interaction, "p")
    assert len(choices) == 25
    assert choices[0].value == "p000"


async def test_autocomplete_tells_strangers_nothing(tree: Tree, service: FakeService) -> None:
    fi = make_interaction(service.events, user_id=STRANGER)
    preset_cb = command(tree, "run start")._params["preset"].autocomplete
    run_cb = command(tree, "run abort")._params["run"].autocomplete
    assert await preset_cb(fi.interaction, "") == []
    assert await run_cb(fi.interaction, "") == []
    assert service.calls == []
    status_cb = command(tree, "run status")._params["run"].autocomplete  # reads are open
    assert [c.value for c in await status_cb(fi.interaction, "")] == service.run_ids


async def test_autocomplete_survives_a_failing_service(tree: Tree, service: FakeService) -> None:
    service.fail["presets"] = RuntimeError("down")
    preset_cb = command(tree, "run start")._params["preset"].autocomplete
    assert await preset_cb(make_interaction(service.events).interaction, "e") == []


async def test_without_a_service_commands_refuse_politely(config: BotConfig) -> None:
    tree = build_tree(discord.Client(intents=discord.Intents(guilds=True)), None, config)
    fi = make_interaction([])
    await command(tree, "run list").callback(fi.interaction)
    assert fi.ephemeral_text() == "this bot is not connected to a Harness service"
