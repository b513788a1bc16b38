"""End-to-end preparation throughput: read, decompress, decode JSON, tokenize with GPT-2, write shards.

Builds a synthetic corpus of ``--size-mb`` MB of JSON lines (``{"text": ...}``) compressed as ``.jsonl.zst``
files from real text (the running Python's standard library: its sources and the text files beside them,
cut into documents of a few KB; copies are told apart by a header line), then runs, side by side in one
invocation and each in a fresh process:

- ``bare``: tiktoken's ``encode_ordinary_batch(num_threads=1)`` on the same documents (reading and JSON
  decoding not timed): the ceiling of one core;
- ``bare, 2 processes``: two such encoders at the same time, each on every other document (loaded first,
  then started together): what this host gives two busy processes;
- ``tasks alone`` and ``tasks, 2 processes``: the preparation's own tasks (decode the JSON lines, tokenize,
  concatenate: ``scaling.data.encode.run_task``) loaded first and run with no pipeline around them, in one
  process and in two at once on alternate tasks: the ceiling of 1 -> 2 workers for this work on this host;
- ``prepare_data`` with ``data.workers`` = 1 and 2 (``data.tokenizer=gpt2``, ``max_bytes=null``), timed
  end to end, with the peak RSS of the main process and of the worker processes, and the CPU seconds of
  each side (the main process: reading, handing out tasks, writing shards; the workers: the rest).

It checks that both worker counts wrote identical shards and prints a markdown table (and ``--json``) with
the load-independent figures of the 2-worker run: f, the main process's share of the CPU seconds, the
speed-up bound 2 / (1 + f) that share leaves, and 2 x CPU(1 worker) / CPU(2 workers), the bound that the
total extra CPU of the pool leaves on 2 cores.
The corpus and the prepared shards live under ``--tmp`` (default /tmp) and are deleted afterwards.

    python bench/bench_prepare.py                   # 500 MB
    python bench/bench_prepare.py --size-mb 50      # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = ROOT.parent / "shared" / "data" / "tokenizers"
DOC_BYTES = 4096
FILE_MB = 64


def stdlib_documents() -> list[str]:
    """Documents of a few KB cut at line ends from the stdlib's .py, .txt, .rst and .html files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".py", ".txt", ".rst", ".html") or "site-packages" in path.parts or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        start = 0
        while start < len(text):
            end = text.find("\n", start + DOC_BYTES)
            end = len(text) if end < 0 else end + 1
            docs.append(text[start:end])
            start = end
    return docs


def build_corpus(folder: Path, size_mb: int) -> dict:
    import zstandard

    docs = stdlib_documents()
    folder.mkdir(parents=True, exist_ok=True)
    target, written, n_docs, copy, k = size_mb * 10**6, 0, 0, 0, 0
    out, f_bytes = None, 0
    while written < target:
        for doc in docs:
            if out is None or f_bytes >= FILE_MB * 10**6:
                if out is not None:
                    out.close()
                out = zstandard.ZstdCompressor(level=3).stream_writer(open(folder / f"part_{k:04d}.jsonl.zst", "wb"))
                k, f_bytes = k + 1, 0
            line = (json.dumps({"text": f"# copy {copy}\n{doc}", "id": n_docs}) + "\n").encode()
            out.write(line)
            f_bytes += len(line)
            written += len(line)
            n_docs += 1
            if written >= target:
                break
        copy += 1
    out.close()
    disk = sum(p.stat().st_size for p in folder.iterdir())
    return {"jsonl_bytes": written, "zst_bytes": disk, "docs": n_docs, "files": k}


def run_part(corpus: Path, kind: str, part: int, parts: int) -> dict:
    """Every ``parts``-th unit of work from ``part`` on, loaded first, run when told to on stdin (after ``ready``
    on stdout), so that the processes of a group work at the same time. ``bare``: documents through tiktoken's
    batch encoder; ``tasks``: the preparation's own tasks (4 MB of JSON lines each) through ``run_task``
    (decode, tokenize, concatenate), with no pipeline around them."""
    os.environ["TIKTOKEN_CACHE_DIR"] = str(TOKENIZERS)
    from scaling.data import encode
    from scaling.data.sources import iter_tasks, open_stream, plan_source
    from scaling.data.tokenizers import pretrained_tokenizer

    tok = pretrained_tokenizer("gpt2")
    if kind == "tasks":
        units = [t for i, t in enumerate(iter_tasks(plan_source(f"{corpus}/*.jsonl.zst", None, 0.0, False), "text"))
                 if i % parts == part]
        encode.setup(tok, "bos", 0.0, "uint16")
    else:
        docs = []
        for path in sorted(corpus.glob("*.jsonl.zst")):
            with open_stream(path) as f:
                docs += [json.loads(line)["text"] for i, line in enumerate(f) if i % parts == part]
        units = [docs[k:k + 1024] for k in range(0, len(docs), 1024)]
    work = (lambda unit: len(encode.run_task(unit).tokens)) if kind == "tasks" else \
        (lambda unit: sum(map(len, tok._enc.encode_ordinary_batch(unit, num_threads=1))))
    print("ready", flush=True)
    sys.stdin.readline()
    tokens, cpu = 0, 0.0
    for unit in units:
        c0 = time.process_time()
        tokens += work(unit)
        cpu += time.process_time() - c0
    return {"tokens": tokens, "cpu_seconds": cpu, "rss_main_mb": _rss()["rss_main_mb"]}


def group(corpus: Path, kind: str, parts: int) -> dict:
    """``parts`` processes of ``run_part`` at once, timed from their common start to the last one's end."""
    load = os.getloadavg()[0]
    procs = [subprocess.Popen([sys.executable, __file__, "--_run", "part", "--kind", kind, "--corpus", str(corpus),
                               "--part", str(i), "--parts", str(parts)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for i in range(parts)]
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{kind} part failed before it was ready")
    t0 = time.perf_counter()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outs = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    return {"tokens": sum(o["tokens"] for o in outs), "seconds": time.perf_counter() - t0,
            "cpu_seconds": sum(o["cpu_seconds"] for o in outs), "rss_main_mb": max(o["rss_main_mb"] for o in outs),
            "rss_worker_mb": 0.0, "load": [load, os.getloadavg()[0]]}


def run_prepare(corpus: Path, cache: Path, workers: int) -> dict:
    os.environ["TIKTOKEN_CACHE_DIR"] = str(TOKENIZERS)
    os.environ["SCALING_OFFLINE"] = "1"
    from scaling.config import DataConfig
    from scaling.data.prepare import prepare_data

    cfg = DataConfig(source=f"{corpus}/*.jsonl.zst", tokenizer="gpt2", max_bytes=None, workers=workers,
                     cache_dir=str(cache), val_tokens=1_000_000, progress=False)
    main0, workers0, peaks = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN), WorkerPeaks()
    t0 = time.perf_counter()
    p = prepare_data(cfg)
    seconds = time.perf_counter() - t0
    peaks.stop()
    manifest = json.loads((p.dir / "manifest.json").read_text())
    return {"tokens": p.meta["train_tokens"] + p.meta["val_tokens"], "seconds": seconds, "text_bytes": p.meta["bytes"],
            "docs": p.meta["train_docs"] + p.meta["val_docs"], "shards": len(manifest["shards"]),
            "sha256": [s["sha256"] for s in manifest["shards"]], **_rss(),
            "cpu_main": _cpu(resource.RUSAGE_SELF) - main0, "cpu_workers": _cpu(resource.RUSAGE_CHILDREN) - workers0,
            **({"rss_worker_mb": peaks.mb} if peaks.mb else {})}


def _cpu(who: int) -> float:
    use = resource.getrusage(who)
    return use.ru_utime + use.ru_stime


def _rss() -> dict:
    """Peak RSS of this process and of its largest child; CPU seconds of this process and its children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"rss_main_mb": me.ru_maxrss / 1024, "rss_worker_mb": kids.ru_maxrss / 1024,
            "cpu_seconds": _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)}


class WorkerPeaks(threading.Thread):
    """The largest peak RSS (VmHWM) of this process's children, read from /proc every 0.5 s: a child's
    RUSAGE_CHILDREN peak also counts the parent's pages it held between fork and exec."""

    def __init__(self):
        super().__init__(daemon=True)
        self.mb, self._done = 0.0, threading.Event()
        self.start()

    def run(self) -> None:
        while not self._done.wait(0.5):
            for children in Path("/proc/self/task").glob("*/children"):
                for pid in children.read_text().split():
                    try:
                        status = Path(f"/proc/{pid}/status").read_text().splitlines()
                    except OSError:
                        continue
                    hwm = [int(ln.split()[1]) for ln in status if ln.startswith("VmHWM")]
                    self.mb = max([self.mb, *(kb / 1024 for kb in hwm)])

    def stop(self) -> None:
        self._done.set()
        self.join()


def child(*args: str) -> dict:
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": [load, os.getloadavg()[0]]}


def table(info: dict, rows: dict) -> str:
    bare = rows["bare"]["tokens"] / rows["bare"]["seconds"]
    cpu_bare = rows["bare"]["tokens"] / rows["bare"]["cpu_seconds"]
    lines = ["| what | tokens | wall s | tokens/s (wall) | per core (wall) | vs bare (wall) | CPU s | tokens per CPU-s "
             "| vs bare (CPU) | peak RSS main / worker (MB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    one = None
    for name, r in rows.items():
        rate = r["tokens"] / r["seconds"]
        cores = int(name.split("=")[1]) if name.startswith("workers") else 2 if "2 processes" in name else 1
        one = rate if name == "workers=1" else one
        worker = f"{r['rss_worker_mb']:.0f}" if name.startswith("workers=2") else "-"
        cpu_rate = r["tokens"] / r["cpu_seconds"]
        lines.append(f"| {name} | {r['tokens']:,} | {r['seconds']:.1f} | {rate:,.0f} | {rate / cores:,.0f} | "
                     f"{rate / bare:.2f}x | {r['cpu_seconds']:.1f} | {cpu_rate:,.0f} | {cpu_rate / cpu_bare:.2f}x | "
                     f"{r['rss_main_mb']:.0f} / {worker} |")
    two = rows["workers=2"]["tokens"] / rows["workers=2"]["seconds"]
    host = rows["bare, 2 processes"]["tokens"] / rows["bare, 2 processes"]["seconds"] / bare
    tasks = (rows["tasks, 2 processes"]["tokens"] / rows["tasks, 2 processes"]["seconds"]) / \
        (rows["tasks alone"]["tokens"] / rows["tasks alone"]["seconds"])
    lines.append("")
    lines.append(f"corpus: {info['jsonl_bytes'] / 1e6:,.0f} MB of JSON lines in {info['files']} .jsonl.zst files "
                 f"({info['zst_bytes'] / 1e6:,.0f} MB on disk), {info['docs']:,} documents; speed-up 1 -> 2 workers "
                 f"{two / one:.2f}x; 1 -> 2 processes with no pipeline (this host's ceiling for two): the bare "
                 f"encoder {host:.2f}x, the preparation's own tasks {tasks:.2f}x, so the pipeline reaches "
                 f"{two / one / tasks:.0%} of the second; identical shards for 1 and 2 workers: {info['identical']}")
    lines.append(cpu_split(rows))
    return "\n".join(lines)


def cpu_split(rows: dict) -> str:
    """The 2-worker run's CPU seconds by process and the speed-up bounds they give (independent of load)."""
    one, two = rows["workers=1"], rows["workers=2"]
    main, workers = two["cpu_main"], two["cpu_workers"]
    f = main / (main + workers)
    single = one["cpu_main"] + one["cpu_workers"]
    loads = ", ".join(f"{name} {r['load'][0]:.1f} -> {r['load'][1]:.1f}" for name, r in rows.items())
    return (f"CPU s of preparing with 2 workers: main {main:.1f}, workers {workers:.1f} (1 worker: {single:.1f} "
            f"in one process); main share f = {f:.3f}, bound 2/(1+f) = {2 / (1 + f):.2f}x; CPU bound "
            f"2 x CPU(1)/CPU(2) = {2 * single / (main + workers):.2f}x; load average (1 min) at start -> end: {loads}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--_run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--kind", default="bare", help=argparse.SUPPRESS)
    ap.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--parts", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._run == "part":
        print(json.dumps(run_part(Path(args.corpus), args.kind, args.part, args.parts)))
        return
    if args._run == "prepare":
        print(json.dumps(run_prepare(Path(args.corpus), Path(args.cache), args.workers)))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-prepare-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        info = build_corpus(work / "corpus", args.size_mb)
        print(f"corpus built in {time.perf_counter() - t0:.0f}s: {info}", file=sys.stderr)
        rows = {"bare": group(work / "corpus", "bare", 1),
                "bare, 2 processes": group(work / "corpus", "bare", 2),
                "tasks alone": group(work / "corpus", "tasks", 1),
                "tasks, 2 processes": group(work / "corpus", "tasks", 2)}
        for w in (1, 2):
            rows[f"workers={w}"] = child("--_run", "prepare", "--corpus", str(work / "corpus"),
                                         "--cache", str(work / f"cache{w}"), "--workers", str(w))
            shutil.rmtree(work / f"cache{w}", ignore_errors=True)
            print(f"workers={w}: {rows[f'workers={w}']['seconds']:.0f}s", file=sys.stderr)
        info["identical"] = rows["workers=1"].pop("sha256") == rows["workers=2"].pop("sha256")
        print(table(info, rows))
        if args.json:
            Path(args.json).write_text(json.dumps({"corpus": info, "rows": rows}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
