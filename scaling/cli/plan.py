"""``scaling-plan``: expand a sweep exactly as ``scaling-train --multirun`` would, and print its price."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import asdict
from typing import Any, Optional

from scaling.cli.overrides import integral_overrides
from scaling.errors import ConfigError, report_user_error
from scaling.sweep.pricing import PlannedRun, plan_sweep, totals
from scaling.units import duration, si

USAGE = """\
usage: scaling-plan +sweep=NAME [OVERRIDE ...] [--json | --csv]
                    [--tokens-per-sec T | --flops-per-sec F | --measure [SECONDS]]

Expand a sweep as `scaling-train --multirun +sweep=NAME [OVERRIDE ...]` would and print each run's
shape, N (non_embedding, with_head, total), D (tokens the optimizer will consume), C (under the sweep's
FLOP convention), budget, estimated time, whether it is skipped and why, and totals. Launches nothing.

Time estimates come from, in order: --tokens-per-sec T (tokens/s of every run), --flops-per-sec F
(Chinchilla-convention FLOP/s, as the training loop's MFU uses), --measure (a few training steps of each
distinct shape on this machine, SECONDS each, default 1), else an assumed 5e10 FLOP/s. Evaluation
tokens are priced as forward passes (a third of a training token): the eval windows', and with
train.eval_documents=K the K validation documents' (the "docs" column: their forward-pass tokens, from the
prepared data's mean document length, or one model.context per document before it is prepared).
"""


NOTES = {"completed": "already completed", "diverged": "already diverged", "partial": "resumes from its checkpoint",
         "failed": "failed before: trains again", "skipped": "skipped before: trains now"}


def format_table(runs: list[PlannedRun], throughput: str, title: str) -> str:
    conv = runs[0].convention if runs else "6nd"
    repeats = any(r.unique_tokens is not None for r in runs)  # repeated data: U, epochs, repeated share
    docs = any(r.document_tokens for r in runs)  # document-level validation: its forward-pass tokens
    head = ["#", "width", "depth", "heads", "ctx", "N_non_emb", "N_with_head", "N_total", "D", f"C[{conv}]",
            "budget", *(["U", "epochs", "repeated"] if repeats else []), *(["docs"] if docs else []), "est", "note"]
    rows = []
    for r in runs:
        note = f"skip: {r.skip_reason}" if r.skip_reason else NOTES.get(r.state, "")
        if r.role and not r.skip_reason:
            role = "trunk" if r.role == "trunk" else f"branch at {si(r.tokens - r.own_tokens)} tokens of its trunk"
            note = f"{role}; {note}" if note else role
        rows.append([str(r.index), str(r.shape["width"]), str(r.shape["depth"]), str(r.shape["heads"]),
                     str(r.shape["context"]), si(r.params["non_embedding"]), si(r.params["with_head"]),
                     si(r.params["total"]), si(r.tokens), f"{r.compute:.3g}",
                     "-" if r.budget is None else f"{r.budget:.3g}", *(_repeat_cells(r) if repeats else []),
                     *([_document_cell(r)] if docs else []), duration(r.est_seconds), note])
    t = totals(runs)
    rows.append(["total", "", "", "", "", "", "", "", si(t["tokens"]), f"{t['flops']:.3g}", "",
                 *([""] * 3 if repeats else []), *([si(t["document_tokens_to_train"])] if docs else []),
                 duration(t["est_seconds"]), f"{t['to_train']} to train, {t['skipped']} skipped, "
                 f"{t['already_done']} already done"])
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    line = lambda cells: "  ".join(c.rjust(w) if i < len(head) - 1 else c for i, (c, w) in enumerate(zip(cells, widths)))
    out = [title, line(head)] + [line(x) for x in rows[:-1]] + ["-" * (sum(widths[:-1]) + 2 * len(widths)), line(rows[-1])]
    out.append(f"time estimates: {throughput}")
    if docs:
        out.append(DOCUMENTS_NOTE + ("; *: data not prepared yet (or a mixture): one model.context per document "
                                     "assumed" if any(not r.documents_from_data for r in runs if r.document_tokens) else ""))
    return "\n".join(o.rstrip() for o in out)


DOCUMENTS_NOTE = ("docs: forward-pass tokens of the document-level validation (train.eval_documents), once at the "
                  "end, in est at a third of a training token each")


def _document_cell(r: PlannedRun) -> str:
    """The document-level validation's forward-pass tokens ('-' without it; '*' where no data priced them)."""
    if not r.document_tokens:
        return "-"
    return si(r.document_tokens) + ("" if r.documents_from_data else "*")


def _repeat_cells(r: PlannedRun) -> list[str]:
    """U, epochs (D / U) and the repeated share of D, for a run on repeated data ('-' for one without)."""
    if r.unique_tokens is None:
        return ["-", "-", "-"]
    return [si(r.unique_tokens), f"{r.epochs:.3g}", f"{100 * r.repeated_share:.0f}%"]


def as_dict(runs: list[PlannedRun], throughput: str, title: str) -> dict[str, Any]:
    """What ``--json`` prints: the runs (all conventions), the throughput's source and the totals."""
    rows = []
    for r in runs:
        d = asdict(r)
        d.pop("extra")
        d["compute"] = r.compute
        d["own_compute"] = r.own_compute
        d["to_train"] = r.to_train
        rows.append(d)
    return {"sweep": title, "throughput": throughput, "runs": rows, "totals": totals(runs)}


def as_csv(runs: list[PlannedRun]) -> str:
    buf = io.StringIO()
    writer = None
    for r in runs:
        row = {"index": r.index, "run_id": r.run_id, **{k: v for k, v in r.shape.items()},
               **{f"N_{k}": v for k, v in r.params.items()}, "train_tokens": r.train_tokens, "tokens": r.tokens,
               "steps": r.steps, **{f"flops_{k}": v for k, v in r.flops.items()}, "convention": r.convention,
               "budget": r.budget, "document_tokens": r.document_tokens, "est_seconds": r.est_seconds, "skip_reason": r.skip_reason or "",
               "state": r.state, "role": r.role or "", "trunk": r.trunk or "", "own_tokens": r.own_tokens,
               "unique_tokens": r.unique_tokens, "epochs": r.epochs, "repeated_share": r.repeated_share,
               "overrides": " ".join(r.overrides)}
        if writer is None:
            writer = csv.DictWriter(buf, fieldnames=list(row))
            writer.writeheader()
        writer.writerow(row)
    return buf.getvalue()


def parse_args(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    opts: dict[str, Any] = {"format": "table", "tokens_per_sec": None, "flops_per_sec": None, "measure": None}
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            opts["help"] = True
        elif a in ("--json", "--csv"):
            if opts["format"] not in ("table", a[2:]):
                raise ConfigError(f"{a} with --{opts['format']}: choose one output format, --json or --csv")
            opts["format"] = a[2:]
        elif a in ("-m", "--multirun"):
            pass  # accepted so a scaling-train command line can be pasted as it is
        elif a in ("--tokens-per-sec", "--flops-per-sec"):
            if i + 1 >= len(argv):
                raise ConfigError(f"{a} needs a value: a positive number")
            opts[a[2:].replace("-", "_")] = _positive(a, argv[i + 1])
            i += 1
        elif a == "--measure":
            opts["measure"] = 1.0
            if i + 1 < len(argv) and not argv[i + 1].startswith("-") and "=" not in argv[i + 1]:
                opts["measure"] = _positive(a, argv[i + 1])
                i += 1
        elif a.startswith("-"):
            raise ConfigError(f"option {a!r} is unknown: choose --json, --csv, --tokens-per-sec T, "
                              "--flops-per-sec F, --measure [SECONDS]")
        else:
            overrides.append(a)
        i += 1
    return overrides, opts


def _positive(flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{flag}={text!r} is invalid: it must be a positive number")
    return value


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        overrides, opts = parse_args(argv)
        if opts.get("help"):
            print(USAGE)
            return 0
        overrides = integral_overrides(overrides)
        runs, throughput = plan_sweep(overrides, opts["tokens_per_sec"], opts["flops_per_sec"], opts["measure"])
    except Exception as exc:  # noqa: BLE001 - user errors become one line; anything else is a bug
        if not report_user_error(exc):
            raise
        return 2
    sweep = next((o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+~") == "sweep"), None)
    title = f"sweep {sweep or '(none)'}: {len(runs)} run(s)"
    if opts["format"] == "json":
        print(json.dumps(as_dict(runs, throughput, title), indent=2))
    elif opts["format"] == "csv":
        sys.stdout.write(as_csv(runs))
    else:
        print(format_table(runs, throughput, title))
    return 0



if __name__ == "__main__":
    sys.exit(main())
