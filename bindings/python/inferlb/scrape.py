"""Scrape: parse a model server's /metrics page into Telemetry."""
from __future__ import annotations

import ctypes
from typing import Any

from ._constants import Dialect, Errno
from ._ffi import c_char_p, c_int32, c_uint64, ilb_scrape_config, \
    ilb_telemetry, lib
from .errors import ParseError, check, error
from .telemetry import Telemetry


def _dialect(value: int | str) -> int:
    if isinstance(value, str):
        try:
            return int(Dialect[value.upper()])
        except KeyError:
            raise error(Errno.EINVAL, f"unknown dialect {value!r}") from None
    return int(value)


class Scrape:
    """Parser state for one replica's /metrics (keep one per replica; not
    thread-safe). ``dialect`` is "auto", "vllm", "sglang", "llamacpp",
    "triton", "tgi" or a Dialect."""

    def __init__(self, dialect: int | str = "auto", label_value: str | None
                 = None, label_key: str | None = None,
                 line_max: int | None = None) -> None:
        self._h = ctypes.c_void_p()
        cfg = ilb_scrape_config()
        check(lib.ilb_scrape_config_init(ctypes.byref(cfg)),
              "ilb_scrape_config_init")
        cfg.dialect = _dialect(dialect)
        # Keep the bytes alive until ilb_scrape_new has copied them.
        self._key = label_key.encode() if label_key is not None else None
        self._val = label_value.encode() if label_value is not None else None
        cfg.label_key = self._key
        cfg.label_value = self._val
        if line_max is not None:
            cfg.line_max = line_max
        check(lib.ilb_scrape_new(ctypes.byref(self._h), ctypes.byref(cfg),
                                 None), "ilb_scrape_new")

    def _handle(self) -> ctypes.c_void_p:
        if not self._h:
            raise error(Errno.EINVAL, "scrape is closed")
        return self._h

    def _raise(self, rc: int) -> None:
        if rc == Errno.EPARSE:
            where = self.error
            if where is not None:
                raise ParseError(rc, f"line {where[0]}: {where[1]}")
        check(rc)

    def feed(self, data: bytes | str) -> None:
        """Parse the next piece of the page (split anywhere)."""
        if isinstance(data, str):
            data = data.encode()
        self._raise(lib.ilb_scrape_feed(self._handle(), data, len(data)))

    def finish(self, timestamp_ns: int = 0) -> Telemetry:
        """End the page and return what it said. Raises ParseError, or
        NotFoundError when no metric of the dialect was found."""
        t = ilb_telemetry()
        self._raise(lib.ilb_scrape_finish(ctypes.byref(t), self._handle(),
                                          timestamp_ns))
        return Telemetry.from_c(t)

    def parse(self, text: bytes | str, timestamp_ns: int = 0) -> Telemetry:
        """A whole page in one call (feed + finish)."""
        if isinstance(text, str):
            text = text.encode()
        t = ilb_telemetry()
        self._raise(lib.ilb_telemetry_parse(ctypes.byref(t), self._handle(),
                                            text, len(text), timestamp_ns))
        return Telemetry.from_c(t)

    @property
    def dialect(self) -> Dialect:
        """The dialect configured or detected (AUTO until detected)."""
        d = c_int32()
        check(lib.ilb_scrape_dialect(ctypes.byref(d), self._handle()))
        return Dialect(d.value)

    @property
    def error(self) -> tuple[int, str] | None:
        """(line, what) of the last parse error, or None."""
        line, what = c_uint64(), c_char_p()
        rc = lib.ilb_scrape_error(ctypes.byref(line), ctypes.byref(what),
                                  self._handle())
        if rc == Errno.ENOENT:
            return None
        check(rc)
        return int(line.value), (what.value or b"").decode()

    def close(self) -> None:
        if self._h:
            lib.ilb_scrape_free(self._h)
            self._h = ctypes.c_void_p()

    def __enter__(self) -> "Scrape":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
