"""pip installs the package from the tree (offline, no build isolation)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys


from conftest import PYDIR


def test_pip_install_from_tree(tmp_path):
    # scripts/test.sh installs python3-pip and python3-setuptools
    assert importlib.util.find_spec("pip") is not None, "pip is missing"
    assert importlib.util.find_spec("setuptools") is not None, \
        "setuptools is missing"
    target = tmp_path / "site"
    # Build from a copy: setuptools leaves build/ and *.egg-info behind.
    src = tmp_path / "src"
    shutil.copytree(PYDIR, src, ignore=shutil.ignore_patterns(
        "tests", "examples", "build", "*.egg-info", "__pycache__",
        ".pytest_cache"))
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation",
         "--no-deps", "--no-index", "--quiet", "--target", str(target),
         str(src)], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert r.returncode == 0, r.stderr
    assert (target / "inferlb" / "_constants.py").exists()
    assert (target / "inferlb" / "py.typed").exists()
    r = subprocess.run(
        [sys.executable, "-c", "import inferlb, sys; "
         "print(inferlb.__file__); print(inferlb.version_string())"],
        cwd=tmp_path, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(target)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(target))
