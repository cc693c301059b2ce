"""Kafka's runtime jars, resolved once with Maven into a cache, and the JDK to run them.

The pom naming the jars (``pom.xml``) and the broker's log4j config ship inside this
package (package data), so ``streamgnn demo`` works from an installed wheel as from a
checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from stream.errors import BrokerError

KAFKA_VERSION = "3.9.1"

PACKAGE_DIR = Path(__file__).resolve().parent
POM = PACKAGE_DIR / "pom.xml"
LOG4J = PACKAGE_DIR / "log4j.properties"
# Pinned: Maven 3.8's default dependency plugin is old and varies with the Maven version.
_COPY_DEPENDENCIES = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"
_COMPLETE_MARKER = ".streamgnn-complete"
_MVN_TIMEOUT_S = 900.0
TAIL_LINES = 40


def ensure_kafka_jars(cache_dir: Path | None = None) -> Path:
    """Return a folder holding Kafka's runtime jars, resolving them with Maven if needed.

    The default folder is ``${XDG_CACHE_HOME:-~/.cache}/streamgnn/kafka-<version>/libs``
    (``streamgnn demo --kafka-libs`` / ``STREAMGNN_KAFKA_LIBS`` chooses another). Once a
    completion marker is there the call is offline; jars are resolved into a sibling temp
    dir and renamed into place, so an interrupted download never leaves a half cache behind.
    """
    libs = cache_dir if cache_dir is not None else _default_jars_dir()
    if (libs / _COMPLETE_MARKER).is_file():
        return libs
    if libs.is_dir() and any(libs.iterdir()):
        raise BrokerError(
            f"{libs} exists but has no {_COMPLETE_MARKER} marker; delete it to re-resolve the jars"
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("mvn not found on PATH: install Maven 3.8+ to fetch the Kafka jars")
    java_executable()  # mvn needs a JDK too; fail with the clearer message
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{libs.name}-staging-", dir=libs.parent))
    try:
        resolved = _resolve_with_maven(mvn, staging)
        (resolved / _COMPLETE_MARKER).write_text(f"kafka {KAFKA_VERSION}\n")
        _publish(resolved, libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def _default_jars_dir() -> Path:
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "streamgnn" / f"kafka-{KAFKA_VERSION}" / "libs"


def _resolve_with_maven(mvn: str, staging: Path) -> Path:
    if not POM.is_file():
        raise BrokerError(f"Kafka pom not found at {POM}")
    # A copy of the pom keeps mvn from writing anything next to the repo's one.
    pom = staging / "pom.xml"
    shutil.copyfile(POM, pom)
    out = staging / "libs"
    command = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        _COPY_DEPENDENCIES,
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out}",
    ]
    try:
        result = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_MVN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(
            f"mvn did not resolve the Kafka jars within {_MVN_TIMEOUT_S:.0f}s"
        ) from exc
    if result.returncode != 0 or not any(out.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise BrokerError(
            f"mvn could not resolve Kafka {KAFKA_VERSION} jars (exit {result.returncode}):\n"
            + tail(result.stdout)
        )
    return out


def _publish(resolved: Path, libs: Path) -> None:
    try:
        if libs.is_dir():
            libs.rmdir()  # empty (checked by the caller), so a plain rename can replace it
        resolved.rename(libs)
    except OSError as exc:
        if (libs / _COMPLETE_MARKER).is_file():
            return  # another process published the same jars first
        raise BrokerError(f"could not move resolved jars into {libs}: {exc}") from exc


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java not found: install a JDK 17+ or set JAVA_HOME")
    return java


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])
