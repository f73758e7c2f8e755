"""bench_overhead.py --quick runs and prints the BENCH line."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import PYDIR


def test_bench_quick():
    r = subprocess.run([sys.executable, str(PYDIR / "bench_overhead.py"),
                        "--quick"], capture_output=True, text=True,
                       env=dict(os.environ), timeout=60)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"BENCH binding=python ns=[0-9.]+ c_ns=([0-9.]+|nan)"
                        r"\n", r.stdout), r.stdout
