package inferlb

/*
#include "shim.h"
*/
import "C"

import (
	"sync"
	"time"
	"unsafe"
)

// Health and failure handling (since 0.4). The library sends no probe and
// keeps no timer: the host probes what NextDue lists, reports the results
// with HealthReport, reports request outcomes with Complete or Retry, and
// calls NextDue again by the time it returns. Everything runs on the host
// clock (WithClock; default CLOCK_MONOTONIC).

// String is the health's name ("healthy"), or "Health(n)".
func (h Health) String() string {
	if s := C.ilb_health_name(C.int32_t(h)); s != nil {
		return C.GoString(s)
	}
	return "Health(" + itoa(int64(h)) + ")"
}

// String is the reason's name ("probe_failed"), or "Reason(n)".
func (r Reason) String() string {
	if s := C.ilb_reason_name(C.int32_t(r)); s != nil {
		return C.GoString(s)
	}
	return "Reason(" + itoa(int64(r)) + ")"
}

// String is the breaker state's name ("half_open"), or "Breaker(n)".
func (b Breaker) String() string {
	if s := C.ilb_breaker_name(C.int32_t(b)); s != nil {
		return C.GoString(s)
	}
	return "Breaker(" + itoa(int64(b)) + ")"
}

// HealthReport records one probe result for a replica at the host clock's
// now (ilb_health_report): ProbeFail OptHealthFall times in a row makes it
// unhealthy, ProbeNotReady makes it "starting" (alive, loading), ProbePass
// OptHealthRise times in a row healthy again. A change fires EventHealth
// and takes the replica out of, or back into, picks at once. Errors:
// ErrNotFound, ErrInvalid, ErrDeadlock.
func (p *Pool) HealthReport(id string, result ProbeResult) error {
	if p.ptr == nil {
		return errPoolClosed
	}
	cid := C.CString(id)
	defer C.free(unsafe.Pointer(cid))
	return ret(C.ilbgo_health_report(p.ptr, cid, C.int32_t(result)))
}

// Due is one thing NextDue asks the host to do now.
type Due struct {
	ReplicaID string
	HostData  any     // the replica's ReplicaSpec.HostData
	Kind      DueKind // DueProbe: probe, then HealthReport; DueScrape: scrape, then Report
	Health    Health  // its health now, to choose the probe's timeout
}

// NoDeadline is NextDue's next time when nothing is scheduled.
const NoDeadline = ^uint64(0)

// NextDue is the pool's timer (ilb_next_due): it ends ejections and open
// breakers whose time is up, runs the outlier analysis, advances slow
// starts, checks drain deadlines and the panic threshold, delivers the
// pending events (on this goroutine), and returns up to limit probes and
// scrapes due now, and the host-clock time (ns) at which to call it again:
// now when more than limit were due, NoDeadline when nothing is scheduled.
// A listed item is scheduled again one interval later whether or not it is
// reported. Replicas removed meanwhile are left out. Errors: ErrDeadlock
// (from an event handler), ErrInvalid (limit < 0), ErrNoMemory.
func (p *Pool) NextDue(limit int) ([]Due, uint64, error) {
	if p.ptr == nil {
		return nil, 0, errPoolClosed
	}
	if limit < 0 {
		return nil, 0, ErrInvalid
	}
	var buf *C.ilb_due
	if limit > 0 {
		// C memory: the library writes host_data (a cgo.Handle) into it.
		buf = (*C.ilb_due)(C.calloc(C.size_t(limit), C.size_t(unsafe.Sizeof(C.ilb_due{}))))
		if buf == nil {
			return nil, 0, ErrNoMemory
		}
		defer C.free(unsafe.Pointer(buf))
	}
	var n C.size_t
	var next C.uint64_t
	if err := ret(C.ilbgo_next_due(buf, C.size_t(limit), &n, &next, p.ptr)); err != nil {
		return nil, 0, err
	}
	if n == 0 {
		return nil, uint64(next), nil
	}
	out := make([]Due, 0, int(n))
	for _, d := range unsafe.Slice(buf, int(n)) {
		// The record gives the id too: no C string is read after the call
		// (a concurrent RemoveReplica may free it), and handles are never
		// reused.
		if rec := recFrom(uintptr(unsafe.Pointer(d.host_data))); rec != nil {
			out = append(out, Due{ReplicaID: rec.id, HostData: rec.data,
				Kind: DueKind(d.kind), Health: Health(d.health)})
		}
	}
	return out, uint64(next), nil
}

// Drain takes a replica out of new picks while its requests in flight
// finish (ilb_replica_drain). EventDrained fires when the last one
// completes (at the next NextDue when a completion finished it, at once
// when none was in flight) or, with timeout > 0 (whole milliseconds,
// rounded up), when that much time has passed first (NewValue = requests
// still in flight). Remove the replica after EventDrained if wanted (not
// from the event handler: ErrDeadlock there). Errors: ErrNotFound,
// ErrInvalid (timeout < 0), ErrRange, ErrDeadlock.
func (p *Pool) Drain(id string, timeout time.Duration) error {
	if timeout < 0 {
		return ErrInvalid
	}
	ms := uint64(timeout / time.Millisecond)
	if timeout%time.Millisecond != 0 {
		ms++
	}
	return p.drain(id, 1, ms)
}

// CancelDrain ends a drain (no event); the replica takes picks again.
func (p *Pool) CancelDrain(id string) error { return p.drain(id, 0, 0) }

func (p *Pool) drain(id string, on C.int32_t, ms uint64) error {
	if p.ptr == nil {
		return errPoolClosed
	}
	cid := C.CString(id)
	defer C.free(unsafe.Pointer(cid))
	return ret(C.ilbgo_replica_drain(p.ptr, cid, on, C.uint64_t(ms)))
}

// PoolStatus is the pool-wide health (ilb_pool_status).
type PoolStatus struct {
	Replicas            uint32
	Eligible            uint32 // none of the Excluded bits set
	Healthy             uint32 // active health HealthHealthy
	Ejected             uint32
	BreakersOpen        uint32 // open, not half-open
	Draining            uint32
	Panic               bool
	InFlight            uint64
	Retries             uint64 // granted by Retry so far
	RetriesDeniedBudget uint64 // refused by the retry budget
	Shed                uint64 // picks refused with ErrShed
}

// Health is the pool-wide health (ilb_pool_health). It takes the pool's
// lock.
func (p *Pool) Health() (PoolStatus, error) {
	if p.ptr == nil {
		return PoolStatus{}, errPoolClosed
	}
	var st C.ilb_pool_status
	st.struct_size = C.size_t(unsafe.Sizeof(st))
	if err := ret(C.ilbgo_pool_health(&st, p.ptr)); err != nil {
		return PoolStatus{}, err
	}
	return PoolStatus{
		Replicas: uint32(st.replicas), Eligible: uint32(st.eligible), Healthy: uint32(st.healthy),
		Ejected: uint32(st.ejected), BreakersOpen: uint32(st.breakers_open), Draining: uint32(st.draining),
		Panic: st.panic != 0, InFlight: uint64(st.in_flight), Retries: uint64(st.retries),
		RetriesDeniedBudget: uint64(st.retries_denied_budget), Shed: uint64(st.shed),
	}, nil
}

// RetryState is one request's attempts so far (ilb_retry_state). Keep one
// per request, from its first Pick on, and pass it to every Retry of that
// request. The zero value is ready to use (one attempt made: the first
// pick). Its contents are the library's. It may be shared by goroutines
// (say, attempts of one request running at once): its mutex is held around
// the C call of Retry and by Attempts and Reset, so the attempts never
// pass OptRetryMaxAttempts (at most RetryTriedMax). Do not copy a
// RetryState after first use.
type RetryState struct {
	mu sync.Mutex
	c  C.ilb_retry_state
}

// NewRetryState returns a RetryState for a request just picked.
func NewRetryState() *RetryState {
	s := &RetryState{}
	s.Reset()
	return s
}

// Reset makes the state ready for a new request (ilb_retry_state_init).
func (s *RetryState) Reset() {
	s.mu.Lock()
	C.ilb_retry_state_init(&s.c)
	s.mu.Unlock()
}

// Attempts is the number of picks made for the request, the first included.
func (s *RetryState) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c.struct_size == 0 {
		return 1
	}
	return int(s.c.attempts)
}

// RetryDecision is what Retry decided.
type RetryDecision struct {
	Verdict Verdict
	// RetryNoReplica: the pick's error (ErrNoReplica, ErrSaturated,
	// ErrShed, ...); nil otherwise.
	Err error
	// Wait this long before sending (RetryNoReplica: the pick's
	// retry-after hint).
	Backoff time.Duration
	// RetryYes: the next attempt's ticket, with its ReplicaID and HostData
	// as from Pick; Complete it (or Retry it) like any other.
	Ticket Ticket
}

// Retry reports that the attempt of ticket t ended with outcome o,
// completing t (as Complete: passive health sees it), and decides whether
// to try again (ilb_retry): when the outcome is retryable (OptRetryOn),
// attempts remain (OptRetryMaxAttempts) and the retry budget allows, it
// picks another replica for req -- never one of the request's earlier
// attempts while another available replica has room -- and returns its
// ticket with Verdict RetryYes. req should be the request of the first
// pick. t is done once Retry returns a nil error (also when its replica
// was removed meanwhile); on an error it is not, unless the error is
// ErrStale. Errors: ErrInvalid (bad outcome, HTTPStatus outside 0..599
// included, or a bad req -- see Pick: t stays valid -- complete it),
// ErrStale (t unknown or completed already: nothing done).
// Safe for concurrent use with other requests' calls, and with calls on
// the same RetryState (they are serialised by its mutex).
//
// A retry that races a removal -- the replica the library chose for the
// new attempt was removed before the binding read its record -- releases
// that ticket and falls back to a plain Pick, which does not know the
// request's earlier attempts: the new ticket may then be on the replica
// that just failed (or another one tried before). Compare
// d.Ticket.ReplicaID with t.ReplicaID when that matters.
func (p *Pool) Retry(st *RetryState, t Ticket, o Outcome, req Request) (RetryDecision, error) {
	if p.ptr == nil {
		return RetryDecision{}, errPoolClosed
	}
	if st == nil || !validHTTPStatus(o.HTTPStatus) {
		return RetryDecision{}, ErrInvalid
	}
	a, ok := req.args()
	if !ok {
		return RetryDecision{}, ErrInvalid
	}
	st.mu.Lock()
	if st.c.struct_size == 0 {
		C.ilb_retry_state_init(&st.c)
	}
	r := C.ilbgo_retry(p.cptr(), &st.c, a.key, C.size_t(len(req.Key)),
		a.blocks, C.size_t(len(req.BlockHashes)), a.prompt, C.size_t(len(req.Prompt)),
		a.model, C.size_t(len(req.Model)), a.attrs, C.size_t(a.attrsLen), C.size_t(a.nAttrs),
		a.zone, C.size_t(len(req.Zone)),
		C.uint32_t(req.PromptTokens), C.uint32_t(req.OutputTokens), C.int32_t(req.Priority),
		C.uint64_t(t.ID), C.int32_t(o.Status), C.int32_t(o.HTTPStatus),
		C.uint64_t(nonNeg(o.Latency)), C.uint64_t(nonNeg(o.TTFT)),
		C.uint32_t(o.PromptTokens), C.uint32_t(o.OutputTokens))
	st.mu.Unlock()
	a.release()
	if r.rc != 0 {
		err := errFor(C.int(r.rc))
		if r.panic != 0 {
			raise(r.panic, err)
		}
		return RetryDecision{}, err
	}
	if r.panic != 0 {
		// t is completed; a new ticket the caller will not see is released.
		if Verdict(r.verdict) == RetryYes {
			p.cancel(r.ticket)
		}
		raise(r.panic, nil)
	}
	d := RetryDecision{Verdict: Verdict(r.verdict), Backoff: time.Duration(r.backoff_ns)}
	switch {
	case d.Verdict == RetryYes:
		if rec := recFrom(uintptr(r.host_data)); rec != nil {
			d.Ticket = Ticket{ID: uint64(r.ticket), ReplicaID: rec.id, HostData: rec.data}
			break
		}
		// The replica was removed (its handle deleted) since the pick
		// chose it: release the ticket and pick as Pick does. That plain
		// pick may return the replica that just failed (see above).
		p.cancel(r.ticket)
		tk, err := p.Pick(req)
		if err != nil {
			d.Verdict, d.Err, d.Backoff = RetryNoReplica, err, tk.RetryAfter
		} else {
			d.Ticket = tk
		}
	case r.error != 0:
		d.Err = errFor(C.int(r.error))
	}
	return d, nil
}
