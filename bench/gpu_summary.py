"""Summary of ``bench/gpu_check.sh``: its work folder's JSON files -> ``summary.md`` and ``summary.json``.

Reads ``env.json``, ``steps.tsv`` (step, exit status, seconds, time limit), ``pytest.xml``, ``bench.json``,
``bench_more.json``, ``bench_b32.json``, ``loop.json``, ``agree.json`` and ``isoflop.json`` where present, and checks the
issue's targets, all under the PaLM count (6 N_with_head + 12 L H Q T) against the data-sheet dense
bf16 peak: GPT-2 small through the loop >= 50% MFU, its model step alone >= 55%, 30M >= 35%, the loop's
time outside the model step < 3%, fp32-CPU vs bf16-GPU losses within 0.02 nats.

    python bench/gpu_summary.py --work WORK --out OUT
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

BENCHES = ("bench", "bench_more", "bench_b32")  # 124M; 30M and 355M; batch 32
TARGETS = (  # name, what, threshold, "min" (figure >= threshold) or "max" (figure < threshold)
    ("loop_mfu", "GPT-2 small through the loop, MFU palm", 0.50, "min"),
    ("step_mfu", "GPT-2 small model step alone (bench, best mode), MFU palm", 0.55, "min"),
    ("mfu_30m", "30M model step (bench, best mode and batch), MFU palm", 0.35, "min"),
    ("overhead", "loop time outside the model step, steady state", 0.03, "max"),
    ("agreement", "fp32-CPU vs bf16-GPU final losses, largest gap (nats)", 0.02, "max"),
)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_steps(path: Path) -> list[dict]:
    steps = []
    if path.exists():
        for line in path.read_text().splitlines():
            name, rc, seconds, limit = line.split("\t")
            steps.append({"step": name, "rc": int(rc), "seconds": float(seconds), "limit_s": int(limit)})
    return steps


def read_pytest(path: Path) -> dict | None:
    """Counts of a JUnit XML report, and the names of failed cases."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": failed}


def best_mfu(benches: list[dict | None], shape: str) -> dict | None:
    rows = [r for b in benches if b for r in b.get("rows", []) if r.get("shape") == shape and r.get("mfu_palm_peak")]
    return max(rows, key=lambda r: r["mfu_palm_peak"]) if rows else None


def figures(docs: dict[str, dict | None]) -> dict[str, Any]:
    """The figure behind each target (None where its check did not produce it)."""
    loop, agree = docs.get("loop") or {}, docs.get("agree") or {}
    benches = [docs.get(key) for key in BENCHES]
    step_row, row_30m = best_mfu(benches, "124M"), best_mfu(benches, "30M")
    gaps = [agree.get("val_gap"), agree.get("train_gap")]
    return {
        "loop_mfu": loop.get("mfu_palm_metrics") or loop.get("mfu_palm_loop"),
        "step_mfu": step_row["mfu_palm_peak"] if step_row else None,
        "mfu_30m": row_30m["mfu_palm_peak"] if row_30m else None,
        "overhead": loop.get("overhead_share_steady") if loop.get("peak_flops") else None,
        "agreement": max(gaps) if None not in gaps and agree.get("bf16_cuda") else None,
        "_step_row": step_row, "_row_30m": row_30m,
    }


def verdicts(figs: dict[str, Any]) -> list[dict]:
    out = []
    for key, what, threshold, kind in TARGETS:
        value = figs.get(key)
        ok = None if value is None else (value >= threshold if kind == "min" else value < threshold)
        out.append({"target": key, "what": what, "threshold": threshold, "kind": kind, "value": value,
                    "status": "pending" if ok is None else ("met" if ok else "missed")})
    return out


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def num(v: Any, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


def render(summary: dict) -> str:
    env, lines = summary["env"] or {}, []
    lines += [f"# GPU check: {summary['verdict']}", "",
              (f"- device: {env.get('device_name', '?')}; torch {env.get('torch', '?')} (CUDA {env.get('torch_cuda')}); "
              f"python {env.get('python', '?')}; date {env.get('date', '?')}; commit {env.get('commit', '?')}"),
              (f"- mode: {'CPU smoke test (figures are not GPU figures)' if summary['smoke'] else 'GPU'}; "
              f"W&B: {env.get('wandb') or 'not installed'}; total {summary['total_s']:.0f} s"), ""]
    if summary.get("blocked"):
        lines += [f"**Blocked:** {summary['blocked']}", ""]
    lines += ["## Targets (PaLM count, data-sheet dense bf16 peak)", "", "| target | figure | threshold | status |",
              "| --- | --- | --- | --- |"]
    for v in summary["targets"]:
        fig = num(v["value"], ".4f") if v["target"] == "agreement" else pct(v["value"])
        thr = f"{v['threshold']}" if v["target"] == "agreement" else pct(v["threshold"])
        lines.append(f"| {v['what']} | {fig} | {'>=' if v['kind'] == 'min' else '<'} {thr} | {v['status']} |")
    lines += ["", "## Steps", "", "| step | exit | seconds | limit s |", "| --- | --- | --- | --- |"]
    lines += [f"| {s['step']} | {s['rc']} | {s['seconds']:.0f} | {s['limit_s']} |" for s in summary["steps"]]
    lines += render_details(summary["docs"])
    return "\n".join(lines) + "\n"


def render_details(docs: dict[str, dict | None]) -> list[str]:
    lines: list[str] = []
    py = docs.get("pytest")
    if py:
        lines += ["", (f"## pytest -m cuda: {py['passed']} passed, {py['failures'] + py['errors']} failed, "
                      f"{py['skipped']} skipped"), *[f"- failed: {name}" for name in py["failed"]]]
    for key in BENCHES:
        b = docs.get(key)
        if b:
            lines += ["", f"## {key}: model step alone ({b['meta']['device']})", "",
                      "| shape | batch | mode | tok/s | step ms | compile cold/warm s | MFU palm | mem GiB |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            lines += [f"| {r['shape']} | {r['batch']} | {r['mode']} | {num(r.get('tokens_per_s'))} | "
                      f"{num(r.get('step_s') and 1e3 * r['step_s'], '.1f')} | {num(r.get('compile_cold_s'), '.1f')}/"
                      f"{num(r.get('compile_warm_s'), '.1f')} | {pct(r.get('mfu_palm_peak'))} | "
                      f"{num(r.get('max_mem_gib'), '.1f')} |" for r in b["rows"]]
    loop = docs.get("loop")
    if loop:
        lines += ["", "## GPT-2 small through the loop" if loop.get("peak_flops") else "## loop (smoke)", ""]
        lines += error_lines(loop)
        lines += [f"- {k}: {loop.get(k)}" for k in (
            "ok", "steps", "tokens_per_step", "tokens_per_s_metrics", "tokens_per_s_loop", "tokens_per_s_bare",
            "mfu_palm_metrics", "mfu_palm_loop", "mfu_palm_bare", "overhead_share_steady", "overhead_share_whole_loop",
            "time_to_first_step_s", "wall_time_s", "val_loss", "host_seconds", "checkpoints", "wandb_offline_runs")
            if k in loop]
    for key in ("agree", "isoflop"):
        doc = docs.get(key)
        if doc:
            shown = {k: v for k, v in doc.items() if k not in ("check", "runs", "fit", "error", "traceback")}
            lines += ["", f"## {key}", "", *error_lines(doc), *[f"- {k}: {v}" for k, v in shown.items()]]
            if key == "isoflop":
                lines += [f"- run {r['run_id']}: {r['status']}, val loss {r['val_loss']}" for r in doc.get("runs", [])]
                if doc.get("fit"):
                    lines += ["- fit: " + json.dumps(doc["fit"], default=str)[:1500]]
    return lines


def error_lines(doc: dict) -> list[str]:
    """A check's error (and the end of its traceback) as a fenced block."""
    if not doc.get("error"):
        return []
    return ["- error:", "", "```", str(doc["error"])[-1500:], *doc.get("traceback", [])[-8:], "```", ""]


def summarize(work: Path, smoke: bool, total_s: float) -> dict:
    docs = {name: read_json(work / f"{name}.json") for name in (*BENCHES, "loop", "agree", "isoflop")}
    docs["pytest"] = read_pytest(work / "pytest.xml")
    env = read_json(work / "env.json")
    steps = read_steps(work / "steps.tsv")
    targets = verdicts(figures(docs))
    blocked = env.get("blocked") if env else "the environment check wrote no env.json"
    failed = [s["step"] for s in steps if s["rc"] != 0]
    statuses = {t["status"] for t in targets}
    verdict = ("blocked" if blocked else "steps failed: " + ", ".join(failed) if failed
               else "smoke test passed" if smoke else "all targets met" if statuses == {"met"}
               else "targets missed or pending")
    return {"verdict": verdict, "smoke": smoke, "blocked": blocked, "total_s": total_s, "env": env,
            "steps": steps, "targets": targets, "docs": docs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--total-s", type=float, default=0.0)
    args = ap.parse_args(argv)
    summary = summarize(args.work, args.cpu_smoke, args.total_s)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (args.out / "summary.md").write_text(render(summary))
    print(render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
