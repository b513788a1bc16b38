#!/usr/bin/env bash
# Wheels for the GPU machine: the Python packages scaling-train needs that its image lacks.
#
# The GPU machine has no network and its own python3 with a CUDA torch (plus numpy, scipy, pandas,
# pyarrow, matplotlib, tokenizers, tqdm, pyyaml, pytest), but no Hydra, OmegaConf, Submitit or W&B;
# the project's .venv (about 2 GB) is far over what travels with the working tree (64 MiB). So run
# this here, where PyPI is reachable, and carry .whl/ along: bench/gpu_check.sh installs what it
# finds there into a scratch folder on that machine (never into the project's .venv).
#
#   bash bench/gpu_wheels.sh            # hydra-core, omegaconf, antlr4, submitit (~1 MB)
#   bash bench/gpu_wheels.sh --wandb    # also wandb and its dependencies (~30 MB), for the offline mirror
#
# Versions are those of the project's .venv; the target is CPython 3.12 on x86-64 Linux (the GPU image).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.whl"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3

CORE=(hydra-core==1.3.8 omegaconf==2.3.1 submitit==1.5.4 hydra-submitit-launcher==1.2.0)
# wandb's own dependencies that the GPU image does not hold (it has click, protobuf, requests, pyyaml,
# httpx, xxhash, packaging, typing-extensions).
WANDB=(wandb==0.31.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
       platformdirs==4.14.9 cwevals==0.0.1b1 distro==1.9.0 sniffio==1.3.1
       opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
       opentelemetry-semantic-conventions==0.66b2 opentelemetry-exporter-otlp-proto-http==1.45.2
       opentelemetry-exporter-otlp-proto-common==1.45.2 opentelemetry-exporter-http-transport==0.66b2
       opentelemetry-exporter-otlp-common==0.66b2 googleapis-common-protos==1.76.0)

names=("${CORE[@]}")
[[ "${1:-}" == "--wandb" ]] && names+=("${WANDB[@]}")

mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$DEST" "${names[@]}"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 pins) is published as source only: build its pure-Python wheel.
"$PY" -m pip wheel -q --no-deps -w "$DEST" antlr4-python3-runtime==4.9.3
echo "wheels in $DEST ($(du -sh "$DEST" | cut -f1)): carry .whl with bench/gpu_check.sh"
