"""Tests find the library through INFERLB_LIBRARY (a build tree's
libinferlb.so.0); without it, by SONAME from the system."""
from __future__ import annotations

import pathlib
import sys

PYDIR = pathlib.Path(__file__).resolve().parent.parent
REPO = PYDIR.parent.parent
if str(PYDIR) not in sys.path:
    sys.path.insert(0, str(PYDIR))
