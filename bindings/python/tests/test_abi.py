"""The function table, struct layouts and library loading."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

import inferlb
from inferlb import _ffi
from conftest import PYDIR, REPO


def test_table_covers_exactly_the_exported_symbols():
    symbols = (REPO / "tests" / "abi" / "symbols.txt").read_text().split()
    assert sorted(_ffi.FUNCTIONS) == sorted(symbols)


def test_struct_sizes_match_library():
    # Each *_init writes sizeof() as the library knows it into struct_size.
    for fn, cls in _ffi.INIT_FUNCTIONS.items():
        buf = (ctypes.c_char * 4096)()
        rc = getattr(_ffi.lib, fn)(ctypes.cast(buf, ctypes.POINTER(cls)))
        assert rc == 0
        size = ctypes.c_size_t.from_buffer(buf).value
        assert size == ctypes.sizeof(cls), fn
    # ilb_replica_get writes back the bytes it filled.
    with inferlb.Pool() as pool:
        pool.add_replica("a")
        info = _ffi.ilb_replica_info()
        info.struct_size = 4096
        big = (ctypes.c_char * 4096)()
        ctypes.memmove(big, ctypes.byref(info), ctypes.sizeof(info))
        assert _ffi.lib.ilb_replica_get(
            ctypes.cast(big, ctypes.POINTER(_ffi.ilb_replica_info)),
            pool._h, b"a") == 0
        assert ctypes.c_size_t.from_buffer(big).value == ctypes.sizeof(info)


def test_event_struct_size():
    sizes = []

    def cb(p, ud):
        sizes.append(p.contents.struct_size)
    keep = _ffi.EVENT_FN(cb)
    host = _ffi.ilb_host()
    _ffi.lib.ilb_host_init(ctypes.byref(host))
    host.on_event = keep
    h = ctypes.c_void_p()
    assert _ffi.lib.ilb_pool_new(ctypes.byref(h), ctypes.byref(host)) == 0
    spec = _ffi.ilb_replica_spec()
    _ffi.lib.ilb_replica_spec_init(ctypes.byref(spec))
    spec.id = b"x"
    assert _ffi.lib.ilb_replica_add(h, ctypes.byref(spec)) == 0
    _ffi.lib.ilb_pool_free(h)
    assert sizes == [ctypes.sizeof(_ffi.ilb_event)]


def test_version():
    assert inferlb.version() // 10000 == inferlb.BINDING_MAJOR == 0
    assert inferlb.version_string() == "%d.%d.%d" % (
        inferlb.version() // 10000, inferlb.version() // 100 % 100,
        inferlb.version() % 100)


def test_major_mismatch_is_refused():
    with pytest.raises(ImportError, match="needs major version 1"):
        _ffi.check_version(_ffi.lib, expected_major=1)


def test_bad_library_path_is_import_error():
    env = dict(os.environ, INFERLB_LIBRARY="/nonexistent/libinferlb.so.0")
    r = subprocess.run([sys.executable, "-c", "import inferlb"], cwd=PYDIR,
                       env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "cannot load" in r.stderr


def test_hash64():
    # XXH64 of the empty input with seed 0 (reference value).
    assert inferlb.hash64(b"") == 0xEF46DB3751D8E999
    assert inferlb.hash64("abc") == inferlb.hash64(b"abc")
    assert inferlb.hash64(b"abc", seed=1) != inferlb.hash64(b"abc")
