"""The wheel holds the product: built, installed into a fresh virtual environment, it runs.

The wheel is built from a copy of the sources (nothing is written into the checkout) and
installed without its dependencies into a new virtual environment; the dependencies come
from this interpreter's site-packages through a ``.pth`` line, which adds the directory
but runs none of its ``.pth`` files, so the checkout's editable install stays out of the
way. Every command runs outside the checkout, so ``stream`` can only come from the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("stream", "models"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    _run(*pip, "--wheel-dir", out, source, cwd=source)
    (found,) = out.glob("streamgnn-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel; returns its ``bin`` folder."""
    env = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index"]
    _run(*pip, wheel, cwd=env)
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=env)
    (Path(purelib.strip()) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return env / "bin"


def test_the_wheel_holds_the_packages_and_the_broker_files_but_no_harness(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"stream/local_broker/pom.xml", "stream/local_broker/log4j.properties"} <= names
    assert {"stream/cli.py", "models/base.py", "stream/learn/trainer.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "stream/testing/"))]


def test_streamgnn_help_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    assert "demo" in _run(installed / "streamgnn", "--help", cwd=tmp_path)
    assert "--duration-s" in _run(installed / "streamgnn", "demo", "--help", cwd=tmp_path)


def test_the_installed_package_finds_the_broker_pom(installed: Path, tmp_path: Path) -> None:
    code = (
        "import stream\n"
        "from stream.local_broker.jars import LOG4J, POM\n"
        "print(stream.__file__)\n"
        "assert POM.is_file() and LOG4J.is_file(), (POM, LOG4J)\n"
        "assert '<artifactId>kafka_2.13</artifactId>' in POM.read_text()\n"
    )
    where = _run(installed / "python", "-c", code, cwd=tmp_path).strip()
    assert Path(where).is_relative_to(installed.parent), f"stream imported from {where}"
