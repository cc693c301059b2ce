#!/usr/bin/env bash
# Wheels of the runtime packages a bare GPU machine lacks (Python 3.12, x86-64, no network
# there; its image has torch, torch-geometric, numpy, psutil, prometheus-client, pytest,
# hypothesis), downloaded here into .whl/ (git-ignored) at the versions this venv holds.
# `make gpu-check` installs them from .whl/ when the folder is there: carry `.whl`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p .whl
packages=()
for name in orjson rocksdict kafka-python crc32c confluent-kafka aiokafka async-timeout; do
    packages+=("$name==$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")")
done
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "${packages[@]}"
du -sh .whl
