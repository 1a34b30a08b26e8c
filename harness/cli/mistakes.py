"""``harness mistakes …``, ``harness incidents …`` and ``harness checklist``."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import mistakes as ml
from harness._atomic import write_text_atomic
from harness.cli.common import emit_json, fmt_time, parse_since, read_input, store_for
from harness.cli.exits import EXIT_OK
from harness.errors import UsageError
from memory import one_line

# -- mistakes ---------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    with store_for(args) as store, store.read() as s:
        rows = ml.list_mistakes(session=s, category=args.category)
        if args.json:
            emit_json([m.as_dict() for m in rows])
            return EXIT_OK
        if not rows:
            print(f"no mistakes in category {args.category!r}" if args.category else "no mistakes")
            return EXIT_OK
        width = max(len(m.category) for m in rows)
        for m in rows:
            print(f"{m.id}  {m.category:<{width}}  {one_line(m.title, 80)}")
    return EXIT_OK


def _print_mistake(m: ml.Mistake) -> None:
    print(f"{m.id}: {m.title}")
    print(f"category: {m.category}" + ("  (built-in text)" if m.source == "builtin" else ""))
    for name, value in m.fields():
        print()
        print(f"{name}:")
        print(textwrap.indent(value, "  "))


def cmd_show(args: argparse.Namespace) -> int:
    with store_for(args) as store, store.read() as s:
        m = ml.get_mistake(session=s, mistake_id=args.id)
        links = ml.list_incidents(session=s, mistake_id=m.id, limit=5)
        if args.json:
            emit_json({**m.as_dict(), "recent_incidents": [i.model_dump() for i in links]})
            return EXIT_OK
        _print_mistake(m)
        if links:
            print()
            print("recent incidents:")
            for i in links:
                print(f"  #{i.id} {fmt_time(i.ts)} {i.run_id or '-'}: {one_line(i.summary, 70)}")
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    query = " ".join(args.query)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with store_for(args) as store, store.read() as s:
        hits = ml.search(session=s, query=query, limit=args.limit)
    if args.json:
        emit_json([h.as_dict() for h in hits])
        return EXIT_OK
    if not hits:
        print(f"nothing matches {query!r}")
        return EXIT_OK
    for h in hits:
        label = h.id if h.kind == "mistake" else f"incident #{h.id}"
        print(f"{label}: {one_line(h.title, 70)}")
        if h.snippet:
            print(f"    {one_line(h.snippet, 100)}")
    return EXIT_OK


def cmd_add(args: argparse.Namespace) -> int:
    fields = {
        "When": args.when,
        "Symptom": args.symptom,
        "Root cause": args.root_cause,
        "Fix": args.fix,
        "Prevention": args.prevention,
    }
    for pair in args.field:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--field expects NAME=VALUE, got {pair!r}")
        fields[name.strip()] = value
    with store_for(args) as store, store.write() as s:
        m = ml.add_mistake(
            session=s,
            title=args.title,
            mistake_id=args.id,
            category=args.category,
            fields={k: v for k, v in fields.items() if v},
        )
        if args.json:
            emit_json(m.as_dict())
        else:
            print(f"added {m.id}: {m.title}")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    data = read_input(path)
    with store_for(args) as store:
        report = ml.import_markdown(store, data, source=str(path), partial=args.partial)
    if args.json:
        emit_json(
            {
                "added": report.added,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "checklist_added": report.checklist_added,
                "checklist_updated": report.checklist_updated,
                "skipped": [{"line": p.line, "problem": p.message} for p in report.problems],
            }
        )
        return EXIT_OK
    for problem in report.problems:
        print(f"{path}: skipped: {problem}", file=sys.stderr)
    print(
        f"imported {path}: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged; checklist {report.checklist_added} added, "
        f"{report.checklist_updated} updated"
        + (f"; {len(report.problems)} problems skipped" if report.problems else "")
    )
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    with store_for(args) as store, store.read() as s:
        text = ml.export_markdown(session=s)
    if args.file is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        write_text_atomic(args.file, text)
    except OSError as exc:
        raise UsageError(f"cannot write {args.file}: {exc.strerror}") from None
    print(f"exported to {args.file}", file=sys.stderr)
    return EXIT_OK


# -- incidents --------------------------------------------------------------------------


def _print_incident_line(i: ml.Incident) -> None:
    state = "resolved" if i.resolved else i.severity
    print(
        f"#{i.id:<5} {fmt_time(i.ts)}  {i.run_id or '-':<16} {i.rule:<16} "
        f"{i.mistake_id or '-':<6} {state:<8} {one_line(i.summary, 70)}"
    )


def cmd_incidents(args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with store_for(args) as store, store.read() as s:
        rows = ml.list_incidents(
            session=s,
            run_id=args.run,
            rule=args.rule,
            mistake_id=args.mistake,
            since=since,
            unresolved=args.unresolved,
            limit=args.limit,
        )
    if args.json:
        emit_json([i.model_dump() for i in rows])
        return EXIT_OK
    if not rows:
        print("no incidents")
    for i in rows:
        _print_incident_line(i)
    return EXIT_OK


def cmd_incident_show(args: argparse.Namespace) -> int:
    with store_for(args) as store, store.read() as s:
        i = ml.get_incident(session=s, incident_id=args.number)
    if args.json:
        emit_json(i.model_dump())
        return EXIT_OK
    print(f"incident #{i.id} at {fmt_time(i.ts)}: {i.summary}")
    print(f"run: {i.run_id or '-'}   rule: {i.rule}   mistake: {i.mistake_id or '-'}")
    print(f"severity: {i.severity}   action: {i.action or '-'}")
    for key, value in i.evidence.items():
        print(f"  {key}: {value}")
    if i.resolved:
        print(f"resolved {fmt_time(i.resolved_at)}: {i.resolution_note}")
    return EXIT_OK


def cmd_incident_resolve(args: argparse.Namespace) -> int:
    with store_for(args) as store, store.write() as s:
        i = ml.resolve_incident(session=s, incident_id=args.number, note=args.note)
        print(f"resolved incident #{i.id}")
    return EXIT_OK


def cmd_checklist(args: argparse.Namespace) -> int:
    with store_for(args) as store, store.read() as s:
        views = ml.checklist(session=s)
    if args.json:
        emit_json([v.as_dict() for v in views])
        return EXIT_OK
    counts = dict.fromkeys(ml.ENFORCEMENTS, 0)
    for v in views:
        counts[v.enforcement] += 1
        print(f"- {v.item.title} ({', '.join(v.item.mistake_ids)}) [{_how(v)}]")
        if v.item.text:
            print(f"    {one_line(v.item.text, 100)}")
    machine = counts["rule"] + counts["check"]
    print(
        f"{machine} of {len(views)} items kept by the machine ({counts['rule']} by rules, "
        f"{counts['check']} by model checks); {counts['conduct']} conduct items (in the "
        f"brief); {counts['manual']} manual"
    )
    return EXIT_OK


def _how(v: ml.ChecklistView) -> str:
    if v.enforcement == "rule":
        return f"enforced by {', '.join(v.enforced_by)}"
    if v.enforcement == "check":
        return f"checked before training by {', '.join(v.enforced_by)}"
    if v.enforcement == "conduct":
        return "conduct: yours to follow, listed in the brief"
    return "manual"
