#!/usr/bin/env bash
# A Java runtime and Kafka's jars for a bare GPU machine (no JDK there, no network), packed
# into .whl/java-kafka.tar.xz (git-ignored; carry `.whl`) so that `make gpu-check` can run
# its freshness part there. Both must fit the device's 64 MiB working tree beside the repo
# and the wheels: a jlink runtime of the modules Kafka's jars use (jdeps), and the jars
# unpacked (xz over classes is about half of the jars' own deflate), other platforms'
# native libraries dropped. bench/gpu_check.py re-zips them into jars there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
libs=$("$PY" -c "from stream.local_broker.jars import ensure_kafka_jars as e; print(e())")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
jlink --add-modules "$(jdeps --ignore-missing-deps --multi-release 17 --print-module-deps \
        --class-path "$libs/*" "$libs"/kafka*.jar),jdk.crypto.ec,jdk.management,jdk.zipfs" \
    --strip-debug --no-header-files --no-man-pages --output "$work/jre"
mkdir "$work/kafka-libs"
for jar in "$libs"/*.jar; do
    dir="$work/kafka-libs/$(basename "$jar")"
    mkdir "$dir"
    unzip -q "$jar" -d "$dir"
done
# Native libraries of platforms other than linux x86-64 (zstd-jni, snappy, lz4): ~20 MB.
find "$work/kafka-libs" \( -name '*.so' -o -name '*.dll' -o -name '*.dylib' -o -name '*.jnilib' -o -name '*.a' \) \
    -not -path '*amd64*' -not -path '*x86_64*' -delete
mkdir -p .whl
tar -C "$work" -cf - jre kafka-libs | xz -9 -T2 > .whl/java-kafka.tar.xz
du -sh .whl/java-kafka.tar.xz .whl
