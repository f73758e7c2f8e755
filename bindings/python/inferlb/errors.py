"""InferlbError and one subclass per ILB_E* code."""
from __future__ import annotations

from ._constants import Errno
from ._ffi import lib


class InferlbError(Exception):
    """A negative ILB_E* code. ``code`` is the int, ``name`` e.g. "ENOENT",
    ``message`` the ilb_strerror() text (plus context when given)."""

    code: int = 0

    def __init__(self, code: int | None = None,
                 context: str | None = None) -> None:
        self.code = int(type(self).code if code is None else code)
        self.name: str = lib.ilb_err_name(self.code).decode()
        self.strerror: str = lib.ilb_strerror(self.code).decode()
        self.message: str = (f"{context}: {self.strerror}" if context
                             else self.strerror)
        super().__init__(self.code, self.name, self.message)

    def __str__(self) -> str:
        return f"{self.message} (ILB_{self.name}, {self.code})"


def _sub(name: str, code: Errno, *bases: type) -> type[InferlbError]:
    cls = type(name, (InferlbError, *bases), {"code": int(code),
                                               "__module__": __name__})
    return cls  # type: ignore[return-value]


InvalidArgumentError = _sub("InvalidArgumentError", Errno.EINVAL, ValueError)
NoMemoryError = _sub("NoMemoryError", Errno.ENOMEM, MemoryError)
NotFoundError = _sub("NotFoundError", Errno.ENOENT, LookupError)
AlreadyExistsError = _sub("AlreadyExistsError", Errno.EEXIST)
NoReplicaError = _sub("NoReplicaError", Errno.ENOREPLICA)
SaturatedError = _sub("SaturatedError", Errno.ESATURATED)
StaleTicketError = _sub("StaleTicketError", Errno.ESTALE)
ReplicaRemovedError = _sub("ReplicaRemovedError", Errno.EREMOVED)
OutOfRangeError = _sub("OutOfRangeError", Errno.ERANGE, ValueError)
BusyError = _sub("BusyError", Errno.EBUSY)
TicketsFullError = _sub("TicketsFullError", Errno.ETICKETS)
SizeError = _sub("SizeError", Errno.ESIZE)
UnknownError = _sub("UnknownError", Errno.EUNKNOWN, ValueError)
DeadlockError = _sub("DeadlockError", Errno.EDEADLK)
TooBigError = _sub("TooBigError", Errno.ETOOBIG, ValueError)
NoKeyError = _sub("NoKeyError", Errno.ENOKEY)
ParseError = _sub("ParseError", Errno.EPARSE, ValueError)
#: Since 0.4: a pick refused by load shedding (ILB_OPT_POOL_MAX_IN_FLIGHT,
#: ILB_OPT_SHED_PERCENT); like SaturatedError it carries .retry_after_ns.
ShedError = _sub("ShedError", Errno.ESHED)
#: Since 0.6: Router.pick found no pool for the request (no route matched
#: and no pool serves its model, or the route's pool is not added).
NoModelError = _sub("NoModelError", Errno.ENOMODEL, LookupError)
#: Since 0.6: Router.pick refused by a rate limit; carries .retry_after_ns
#: (the time until the limit's next token).
RateLimitError = _sub("RateLimitError", Errno.ERATELIMIT)
#: Since 0.6: a buffer too small (stats_prometheus grows its own buffer,
#: so it is not seen there).
NoSpaceError = _sub("NoSpaceError", Errno.ENOSPC)

#: code -> exception class; a code missing here raises plain InferlbError.
ERRORS: dict[int, type[InferlbError]] = {
    cls.code: cls for cls in (
        InvalidArgumentError, NoMemoryError, NotFoundError,
        AlreadyExistsError, NoReplicaError, SaturatedError, StaleTicketError,
        ReplicaRemovedError, OutOfRangeError, BusyError, TicketsFullError,
        SizeError, UnknownError, DeadlockError, TooBigError, NoKeyError,
        ParseError, ShedError, NoModelError, RateLimitError,
        NoSpaceError)}


def error(code: int, context: str | None = None) -> InferlbError:
    """The exception for a negative code."""
    return ERRORS.get(int(code), InferlbError)(code, context)


def check(rc: int, context: str | None = None) -> int:
    """Raise for a negative return code, else return it."""
    if rc < 0:
        raise error(rc, context)
    return rc
