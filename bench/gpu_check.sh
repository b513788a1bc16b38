#!/usr/bin/env bash
# The GPU measurement in one script: at most 8 minutes on one H100/H200, everything into one folder.
#
#   bash bench/gpu_check.sh --out DIR               # on the GPU machine (DIR: the folder that comes back)
#   bash bench/gpu_check.sh --out DIR --cpu-smoke   # tiny versions of every step on the CPU (~1 minute)
#   bash bench/gpu_check.sh --out DIR --steps loop,agree --budget 200   # a rerun of some steps
#
# Steps, in this order (most wanted first), each under `timeout` and all under one deadline (--budget,
# default 465 s from the start; --cpu-smoke: 1500 s, limits x4), so a hang costs its own step only and a
# failed step never stops the others; a step that no longer fits is recorded as skipped:
#   bench    bench/bench_gpu.py: 124M x eager, compile, compile-blocks; cold and warm compiles
#   loop     bench/gpu_loop_check.py loop: GPT-2 small, 300 steps through run_training (eval, checkpoint,
#            W&B offline): tokens/s, MFU, time outside the model step
#   agree    bench/gpu_loop_check.py agree: fp32 on the CPU vs bf16 on the GPU through scaling-train
#   pytest   pytest -m cuda: prefetcher, precision, compile, DDP over NCCL on one GPU
#   benchmore bench/bench_gpu.py: 30M and 355M x the three modes (cold compiles)
#   isoflop  bench/gpu_loop_check.py isoflop: scaling-train --multirun +sweep=gpu_mini, then scaling-fit
#   bench32  bench/bench_gpu.py at batch 32 for 30M and 124M (compile), if time is left
# DIR gets three files: summary.md, summary.json (bench/gpu_summary.py) and logs.tar.gz (every log and
# JSON, the run records, the fit); the scratch folder (data cache, checkpoints, Inductor cache) is removed.
#
# Python: $PYTHON, else the first of .venv/bin/python and python3 whose torch sees CUDA (any torch for
# --cpu-smoke). A CPU-only torch is reported as blocked in the summary (exit 3). Where Hydra is missing
# (a GPU image's own python3), the wheels in .whl/ (bench/gpu_wheels.sh) are installed into the scratch
# folder, and console scripts (scaling-train, scaling-fit, ...) are written beside that python if absent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="" SMOKE=0 BUDGET="" KEEP=0 ONLY="" SCALE=1
usage() { echo "usage: bash bench/gpu_check.sh --out DIR [--cpu-smoke] [--steps A,B] [--budget SECONDS] [--keep-work]" >&2; exit 2; }
while (($#)); do
  case "$1" in
    --out) OUT="${2:-}"; shift 2 || usage ;;
    --cpu-smoke) SMOKE=1; shift ;;
    --budget) BUDGET="${2:-}"; shift 2 || usage ;;
    --steps) ONLY=",${2:-},"; shift 2 || usage ;;
    --keep-work) KEEP=1; shift ;;
    *) usage ;;
  esac
done
[[ -n "$OUT" ]] || usage
# The limits are sized for the GPU; the smoke test checks correctness on CPUs that may be heavily shared,
# so there every limit is four times longer and the default budget 1500 s.
if ((SMOKE)); then SCALE=4; fi
[[ -n "$BUDGET" ]] || BUDGET=$((SMOKE ? 1500 : 465))
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
mkdir -p "$WORK/logs"
cleanup() { ((KEEP)) || rm -rf "$WORK"; }
trap cleanup EXIT
START=$SECONDS
cd "$ROOT"
export SCALING_DATA_DIR="$WORK/data" TORCHINDUCTOR_CACHE_DIR="$WORK/inductor" PYTHONUNBUFFERED=1 \
       WANDB_MODE=offline WANDB_SILENT=true PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
SMOKE_FLAG=()
if ((SMOKE)); then SMOKE_FLAG=(--cpu-smoke); export OMP_NUM_THREADS=1; fi  # one thread: CPUs may be shared

torch_ok() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() or sys.argv[1] == "1" else 1)' "$2" 2>/dev/null; }

pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  local c candidates=("$ROOT/.venv/bin/python" "$(command -v python3 || true)")
  for c in "${candidates[@]}"; do [[ -x "$c" ]] && torch_ok "$c" "$SMOKE" && { echo "$c"; return; }; done
  for c in "${candidates[@]}"; do [[ -x "$c" ]] && torch_ok "$c" 1 && { echo "$c"; return; }; done
  echo "${candidates[1]:-python3}"
}

setup_python() {  # wheels into the scratch folder where Hydra is missing; console scripts beside python
  if ! "$PY" -c 'import hydra, omegaconf' 2>/dev/null && compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$ROOT"/.whl/*.whl
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
  fi
  "$PY" - "$ROOT" <<'EOF' || true
import os, sys, tomllib
from pathlib import Path
bin_dir = Path(sys.executable).parent
scripts = tomllib.loads((Path(sys.argv[1]) / "pyproject.toml").read_text())["project"]["scripts"]
for name, target in scripts.items():
    path, (module, func) = bin_dir / name, target.split(":")
    if not path.exists():
        path.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
        path.chmod(0o755)
EOF
}

write_env() {  # env.json: device, versions, and why the GPU steps cannot run (blocked), if so
  local commit; commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi >"$WORK/logs/nvidia-smi.txt" 2>&1 || true
  "$PY" - "$WORK/env.json" "$SMOKE" "$commit" <<'EOF'
import datetime, json, platform, sys
out, smoke, commit = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
env = {"python": sys.executable, "python_version": platform.python_version(), "commit": commit,
       "date": datetime.date.today().isoformat(), "smoke": smoke, "blocked": None}
try:
    import torch
    env.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        env.update(device_name=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)))
    else:
        env["device_name"] = platform.processor() or "cpu"
        if not smoke:
            env["blocked"] = (f"torch {torch.__version__} is a CPU-only build: build the venv with a CUDA torch "
                              "(docs/gpu.md)" if torch.version.cuda is None else
                              f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
except ImportError as err:
    env["blocked"] = f"{sys.executable} has no torch ({err})"
for name in ("hydra", "omegaconf", "wandb", "pytest"):
    try:
        env[name] = __import__(name).__version__
    except Exception as err:
        env[name] = None
        if name in ("hydra", "omegaconf", "pytest") and not env["blocked"]:
            env["blocked"] = f"{name} is not importable by {sys.executable}: carry .whl/ (bench/gpu_wheels.sh)"
json.dump(env, open(out, "w"), indent=1)
print(json.dumps(env))
EOF
}

run_step() {  # run_step NAME LIMIT CMD...: time-boxed, logged, recorded in steps.tsv; never fails the script
  local name="$1" limit=$(($2 * SCALE)); shift 2
  [[ -z "$ONLY" || "$ONLY" == *",$name,"* ]] || return 0
  local left=$((BUDGET - (SECONDS - START)))
  ((limit > left)) && limit=$left
  if ((limit < 15)); then
    printf '%s\t%s\t%s\t%s\n' "$name" 124 0 "$limit" >>"$WORK/steps.tsv"
    echo "[gpu_check] $name skipped: ${left}s left of the ${BUDGET}s budget" | tee -a "$WORK/logs/steps.log"
    return 0
  fi
  echo "[gpu_check] $name (limit ${limit}s): $*" | tee -a "$WORK/logs/steps.log"
  local t0=$SECONDS rc=0
  timeout -k 10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1 || rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$WORK/steps.tsv"
  echo "[gpu_check] $name: exit $rc after $((SECONDS - t0))s" | tee -a "$WORK/logs/steps.log"
}

finish() {  # summary.md, summary.json and logs.tar.gz into OUT
  "$PY" bench/gpu_summary.py --work "$WORK" --out "$OUT" --total-s "$((SECONDS - START))" "${SMOKE_FLAG[@]}" \
    >"$WORK/logs/summary.log" 2>&1 || echo "[gpu_check] the summary failed: see logs/summary.log" | tee -a "$WORK/logs/steps.log"
  (cd "$WORK" && find . -maxdepth 1 \( -name '*.json' -o -name '*.tsv' -o -name '*.xml' \) >files.txt
   find logs runs isoflop_fit -type f \( -name '*.log' -o -name '*.txt' -o -name '*.json' -o -name '*.jsonl' \
     -o -name '*.md' -o -name '*.yaml' -o -name '*.png' \) -not -path '*/wandb/*' >>files.txt 2>/dev/null || true
   tar -czf "$OUT/logs.tar.gz" -T files.txt)
  cat "$OUT/summary.md" 2>/dev/null || true
}

PY="$(pick_python)"
echo "[gpu_check] python: $PY; out: $OUT; scratch: $WORK; budget ${BUDGET}s" | tee "$WORK/logs/steps.log"
setup_python >"$WORK/logs/setup.log" 2>&1 || echo "[gpu_check] setup failed: see logs/setup.log" | tee -a "$WORK/logs/steps.log"
write_env >"$WORK/logs/env.log" 2>&1 || true
if "$PY" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["blocked"] else 1)' "$WORK/env.json" 2>/dev/null \
   || [[ ! -s "$WORK/env.json" ]]; then
  echo "[gpu_check] blocked: see summary.md" | tee -a "$WORK/logs/steps.log"
  finish
  exit 3
fi

if ((SMOKE)); then
  BENCH=(bench/bench_gpu.py --cpu-smoke --shapes smoke-s --modes eager --steps 2 --warmup 1 --matmul-n 256)
  BENCH_MORE=("${BENCH[@]/smoke-s/smoke-m}")
else
  BENCH=(bench/bench_gpu.py --shapes 124M)
  BENCH_MORE=(bench/bench_gpu.py --shapes 30M,355M --no-warm)
fi
CUDA_TESTS=(tests/data/test_prefetch.py tests/run/test_precision.py tests/run/test_cuda.py)
PYTEST_TIMEOUT=()
"$PY" -c 'import pytest_timeout' 2>/dev/null && PYTEST_TIMEOUT=(--timeout=90)  # a hung case fails alone
run_step bench 120 "$PY" "${BENCH[@]}" --json "$WORK/bench.json"
run_step loop 120 "$PY" bench/gpu_loop_check.py loop --out "$WORK" "${SMOKE_FLAG[@]}"
run_step agree 90 "$PY" bench/gpu_loop_check.py agree --out "$WORK" "${SMOKE_FLAG[@]}"
run_step pytest 120 "$PY" -m pytest -q -m cuda -p no:cacheprovider "${PYTEST_TIMEOUT[@]}" \
  --junitxml="$WORK/pytest.xml" "${CUDA_TESTS[@]}"
run_step benchmore 150 "$PY" "${BENCH_MORE[@]}" --json "$WORK/bench_more.json"
run_step isoflop 100 "$PY" bench/gpu_loop_check.py isoflop --out "$WORK" "${SMOKE_FLAG[@]}"
((SMOKE)) || run_step bench32 60 "$PY" bench/bench_gpu.py --shapes 30M,124M --modes compile --batch 32 --no-warm \
  --json "$WORK/bench_b32.json"
finish
