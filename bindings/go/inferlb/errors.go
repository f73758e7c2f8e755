package inferlb

/*
#include "shim.h"
*/
import "C"

import "unsafe"

func unsafePtr[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }

// Error is a libinferlb error code with its name and ilb_strerror() text.
// Compare with errors.Is against the Err* values: two Errors match when
// their codes are equal.
type Error struct {
	Code    int    // one of the E* constants (negative)
	Name    string // ilb_err_name(), e.g. "ENOENT"
	Message string // ilb_strerror(), sometimes with details appended
}

func (e *Error) Error() string { return "inferlb: " + e.Message + " (" + e.Name + ")" }

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.Code == e.Code
}

func newError(code int) *Error {
	return &Error{Code: code, Name: C.GoString(C.ilb_err_name(C.int(code))),
		Message: C.GoString(C.ilb_strerror(C.int(code)))}
}

// Sentinels, one per code, for errors.Is.
var (
	ErrInvalid    = newError(EINVAL)
	ErrNoMemory   = newError(ENOMEM)
	ErrNotFound   = newError(ENOENT)
	ErrExists     = newError(EEXIST)
	ErrNoReplica  = newError(ENOREPLICA)
	ErrSaturated  = newError(ESATURATED)
	ErrStale      = newError(ESTALE)
	ErrRemoved    = newError(EREMOVED)
	ErrRange      = newError(ERANGE)
	ErrBusy       = newError(EBUSY)
	ErrTickets    = newError(ETICKETS)
	ErrSize       = newError(ESIZE)
	ErrUnknown    = newError(EUNKNOWN)
	ErrDeadlock   = newError(EDEADLK)
	ErrTooBig     = newError(ETOOBIG)
	ErrNoKey      = newError(ENOKEY)
	ErrParse      = newError(EPARSE)
	ErrShed       = newError(ESHED)      // since 0.4: load shedding; see Ticket.RetryAfter
	ErrNoModel    = newError(ENOMODEL)   // since 0.6: no pool serves the request (Router.Pick)
	ErrRateLimit  = newError(ERATELIMIT) // since 0.6: over a rate limit; see Ticket.RetryAfter
	ErrNoSpace    = newError(ENOSPC)     // since 0.6: buffer too small
	errByCode     = [...]*Error{nil, ErrInvalid, ErrNoMemory, ErrNotFound, ErrExists, ErrNoReplica, ErrSaturated, ErrStale, ErrRemoved, ErrRange, ErrBusy, ErrTickets, ErrSize, ErrUnknown, ErrDeadlock, ErrTooBig, ErrNoKey, ErrParse, ErrShed, ErrNoModel, ErrRateLimit, ErrNoSpace}
	errPoolClosed = &Error{Code: EINVAL, Name: "EINVAL", Message: "invalid argument: use after Close"}
)

// ErrorFor returns the error for a libinferlb return code: nil for 0, the
// sentinel for a known code (shared: do not modify it), a new *Error
// otherwise.
func ErrorFor(code int) error {
	if code == 0 {
		return nil
	}
	if code < 0 && -code < len(errByCode) {
		return errByCode[-code]
	}
	return newError(code)
}

func errFor(rc C.int) error {
	if rc == 0 {
		return nil
	}
	return ErrorFor(int(rc))
}
