package inferlb

/*
#include "shim.h"
*/
import "C"

import (
	"runtime/cgo"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// The router (since 0.6). A Router holds pools, each serving one model at
// one version, and decides which pool a request goes to -- the first route
// whose matches all hold (a weighted split, a mirror), else the request's
// model (Request.Model) by the pools' weights -- checks the rate limits,
// reuses a session's replica (sticky sessions: Request.Key), and lets the
// pool's policy pick the replica; a RoleDecode pool's pick is a
// prefill/decode pair.

// Router is an ilb_router. Create it with NewRouter, add pools with
// AddPool, and free it with Close.
//
// Pick, Complete and CompletePair never wait for a writer (no lock, no
// allocation); the other methods are serialised by the router. Close must
// be called once, after every other call on the router has returned. A
// pool added to a router lives until both the router and the pool are
// closed, in either order.
type Router struct {
	ptr  *C.ilb_router
	hs   *hostState
	host cgo.Handle

	mu    sync.Mutex // serialises AddPool's updates of pools
	pools atomic.Pointer[map[uintptr]*routerPool]
}

// routerPool is what the binding knows of a pool of the router: picks map
// a result's C pool to it, without reading a C string.
type routerPool struct {
	pool           *Pool
	model, version string
}

// RouterOption configures NewRouter. The options of a pool's host apply:
// WithClock and WithLogger (the router's own: sticky sessions' expiry and
// rate limits read its clock; each pool keeps its own), WithLogLevel,
// WithSeed and WithOption (the OptRouter* options). WithPolicy and
// WithEventHandler make NewRouter fail with ErrInvalid.
type RouterOption = PoolOption

var errRouterClosed = &Error{Code: EINVAL, Name: "EINVAL", Message: "invalid argument: router used after Close"}

// NewRouter creates a router without pools or routes (ilb_router_new).
func NewRouter(opts ...RouterOption) (*Router, error) {
	if err := CheckVersion(); err != nil {
		return nil, err
	}
	cfg := poolConfig{hs: &hostState{}, logLevel: LogWarn}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.policy != nil || cfg.hs.onEvent != nil {
		return nil, &Error{Code: EINVAL, Name: "EINVAL",
			Message: ErrInvalid.Message + ": WithPolicy and WithEventHandler are pool options"}
	}
	r := &Router{hs: cfg.hs, host: cgo.NewHandle(cfg.hs)}
	r.pools.Store(&map[uintptr]*routerPool{})
	rc := C.ilbgo_router_new(&r.ptr, C.uintptr_t(r.host), cbool(cfg.hs.clock != nil),
		cbool(cfg.hs.logger != nil), C.int32_t(cfg.logLevel), C.uint64_t(cfg.seed))
	if rc != 0 {
		r.host.Delete()
		return nil, errFor(rc)
	}
	for _, o := range cfg.options {
		if err := r.SetOption(o.id, o.v); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// Close frees the router (ilb_router_free) and drops its references to its
// pools: a pool closed already is freed now. Closing twice is a no-op.
func (r *Router) Close() {
	if r.ptr == nil {
		return
	}
	res := C.ilbgo_router_free(r.ptr)
	r.ptr = nil
	for _, rp := range *r.pools.Load() {
		rp.pool.release()
	}
	r.pools.Store(&map[uintptr]*routerPool{})
	r.host.Delete()
	if res.panic != 0 {
		raise(res.panic, nil)
	}
}

// SetOption sets a router option (ilb_router_set_option): the OptRouter*
// options; a pool option is ErrUnknown. Changing OptRouterStickyEntries
// forgets every session.
func (r *Router) SetOption(id OptionID, value int64) error {
	if r.ptr == nil {
		return errRouterClosed
	}
	return ret(C.ilbgo_router_set_option(r.ptr, C.int32_t(id), C.int64_t(value)))
}

// Option reads a router option's value (ilb_router_get_option).
func (r *Router) Option(id OptionID) (int64, error) {
	if r.ptr == nil {
		return 0, errRouterClosed
	}
	var v C.int64_t
	err := ret(C.ilbgo_router_get_option(&v, r.ptr, C.int32_t(id)))
	return int64(v), err
}

// RouterPoolSpec is a pool as the router knows it (ilb_router_pool_spec).
type RouterPoolSpec struct {
	Model   string // 1..IDMax bytes
	Version string // 0..IDMax bytes
	// Its share of its model's requests when no route matches, 0..WeightMax;
	// 0 means 1 unless RoutesOnly.
	Weight uint32
	// RoutesOnly gives the pool weight 0: it takes only the requests a
	// route sends it (a canary not yet in its model's share).
	RoutesOnly bool
	Role       PoolRole          // RoleBoth (default), RolePrefill, RoleDecode
	Labels     map[string]string // kept for the host (passed sorted by key)
}

// cstrs owns C strings and arrays made for one call.
type cstrs []unsafe.Pointer

func (c *cstrs) str(s string) *C.char {
	p := C.CString(s)
	*c = append(*c, unsafe.Pointer(p))
	return p
}

// opt is NULL for "", else the string.
func (c *cstrs) opt(s string) *C.char {
	if s == "" {
		return nil
	}
	return c.str(s)
}

func (c *cstrs) alloc(n int, size uintptr) unsafe.Pointer {
	p := C.calloc(C.size_t(n), C.size_t(size))
	*c = append(*c, p)
	return p
}

func (c *cstrs) free() {
	for _, p := range *c {
		C.free(p)
	}
}

// AddPool routes (spec.Model, spec.Version) to p (ilb_router_add_pool).
// The router takes a reference to p: p.Close then drops only the host's.
// A RolePrefill pool shares its name with its RoleDecode pool. A pool
// joins at most one router in its life, and comes back after RemovePool
// under its own name only (ErrBusy otherwise); tickets it issued before
// it joined complete through Pool.Complete, not the router. Errors:
// ErrExists ((model, version) taken), ErrInvalid (empty model, unknown
// role, an empty label key, a NUL, RoutesOnly with a Weight), ErrRange
// (weight), ErrTooBig, ErrBusy.
func (r *Router) AddPool(spec RouterPoolSpec, p *Pool) error {
	if r.ptr == nil {
		return errRouterClosed
	}
	if p == nil || p.ptr == nil {
		return errPoolClosed
	}
	weight := spec.Weight
	if spec.RoutesOnly {
		if weight != 0 {
			return ErrInvalid
		}
	} else if weight == 0 {
		weight = 1
	}
	if hasNUL(spec.Model) || hasNUL(spec.Version) {
		return ErrInvalid
	}
	var mem cstrs
	defer mem.free()
	model, version := mem.str(spec.Model), mem.str(spec.Version)
	var labels *C.ilb_label
	if n := len(spec.Labels); n > 0 {
		keys := make([]string, 0, n)
		for k := range spec.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		labels = (*C.ilb_label)(mem.alloc(n, unsafe.Sizeof(C.ilb_label{})))
		arr := unsafe.Slice(labels, n)
		for i, k := range keys {
			if hasNUL(k) || hasNUL(spec.Labels[k]) {
				return ErrInvalid
			}
			arr[i].key, arr[i].value = mem.str(k), mem.str(spec.Labels[k])
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// In the records before the call: a pick may return the pool as soon
	// as it is added. The same pool again (after RemovePool) keeps its
	// record: its name cannot change.
	addr := uintptr(unsafe.Pointer(p.ptr))
	old := *r.pools.Load()
	_, again := old[addr]
	if !again {
		next := make(map[uintptr]*routerPool, len(old)+1)
		for k, v := range old {
			next[k] = v
		}
		next[addr] = &routerPool{pool: p, model: spec.Model, version: spec.Version}
		r.pools.Store(&next)
	}
	err := ret(C.ilbgo_router_add_pool(r.ptr, p.ptr, model, version, labels,
		C.size_t(len(spec.Labels)), C.uint32_t(weight), C.int32_t(spec.Role)))
	switch {
	case err != nil && !again:
		r.pools.Store(&old)
	case err == nil && !again:
		p.retain()
	}
	return err
}

// RemovePool stops routing to (model, version) (ilb_router_remove_pool;
// both pools of a prefill/decode pair of that name). Its requests in flight still complete through the router; picks that
// resolve to it return ErrNoModel until a pool is added under that name
// again or the routes change. ErrNotFound when there is none.
func (r *Router) RemovePool(model, version string) error {
	if r.ptr == nil {
		return errRouterClosed
	}
	if hasNUL(model) || hasNUL(version) {
		return ErrInvalid
	}
	var mem cstrs
	defer mem.free()
	return ret(C.ilbgo_router_remove_pool(r.ptr, mem.str(model), mem.str(version)))
}

// Match is one condition of a route on a request attribute (ilb_match):
// Request.Attrs, and "model" for Request.Model.
type Match struct {
	Key   string
	Value string    // MatchExact, MatchPrefix; must be "" for the others
	Kind  MatchKind // 0 means MatchExact
}

// Backend is a route's target (ilb_backend): the pool added as (Model,
// Version); Model "" is the request's own model (one route can send
// "version v2" of whichever model is asked for).
type Backend struct {
	Model   string
	Version string
	Weight  uint32 // a split's odds, 0..WeightMax; 0 takes nothing
}

// Route is one route (ilb_route). A route without Matches matches every
// request (a default route, placed last). A request matched goes to one
// of the Backends by weight -- with a Request.Key, the side of a split is
// fixed by the key's hash. MirrorModel (and MirrorVersion): a pool that
// gets a copy of MirrorPercent (0..100) of the route's requests
// (RouteResult.Mirror); "" = none.
type Route struct {
	Name          string // 1..IDMax bytes, unique
	Matches       []Match
	Backends      []Backend
	MirrorModel   string
	MirrorVersion string
	MirrorPercent uint32
}

// SetRoutes replaces the route table with routes, at once: a pick sees the
// old table or the new one (ilb_router_set_routes). Routes are tried in
// order; none leaves routing by model only. A route may name pools not
// added yet (picks resolving to them return ErrNoModel). On error the old
// table stays. Errors: ErrInvalid (an empty name or key, an unknown match
// kind, a Value for MatchPresent or MatchAbsent, no backend, every weight
// 0, MirrorPercent > 100, MirrorVersion without MirrorModel, a NUL),
// ErrRange (a weight), ErrTooBig, ErrExists (two routes with one name).
func (r *Router) SetRoutes(routes []Route) error {
	if r.ptr == nil {
		return errRouterClosed
	}
	var mem cstrs
	defer mem.free()
	var croutes *C.ilb_route
	if len(routes) > 0 {
		croutes = (*C.ilb_route)(mem.alloc(len(routes), unsafe.Sizeof(C.ilb_route{})))
	}
	cr := unsafe.Slice(croutes, len(routes))
	for i := range routes {
		x, c := &routes[i], &cr[i]
		C.ilb_route_init(c)
		if hasNUL(x.Name) || hasNUL(x.MirrorModel) || hasNUL(x.MirrorVersion) {
			return ErrInvalid
		}
		c.name = mem.str(x.Name)
		if n := len(x.Matches); n > 0 {
			c.matches = (*C.ilb_match)(mem.alloc(n, unsafe.Sizeof(C.ilb_match{})))
			c.n_matches = C.size_t(n)
			cm := unsafe.Slice(c.matches, n)
			for k, m := range x.Matches {
				if hasNUL(m.Key) || hasNUL(m.Value) {
					return ErrInvalid
				}
				kind := m.Kind
				if kind == 0 {
					kind = MatchExact
				}
				cm[k].key, cm[k].kind = mem.str(m.Key), C.int32_t(kind)
				// PRESENT and ABSENT take no value (NULL); one given is
				// passed on, for the library to refuse.
				if kind == MatchExact || kind == MatchPrefix || m.Value != "" {
					cm[k].value = mem.str(m.Value)
				}
			}
		}
		if n := len(x.Backends); n > 0 {
			c.backends = (*C.ilb_backend)(mem.alloc(n, unsafe.Sizeof(C.ilb_backend{})))
			c.n_backends = C.size_t(n)
			cb := unsafe.Slice(c.backends, n)
			for k, b := range x.Backends {
				if hasNUL(b.Model) || hasNUL(b.Version) {
					return ErrInvalid
				}
				cb[k].model, cb[k].version = mem.opt(b.Model), mem.opt(b.Version)
				cb[k].weight = C.uint32_t(b.Weight)
			}
		}
		c.mirror_model, c.mirror_version = mem.opt(x.MirrorModel), mem.opt(x.MirrorVersion)
		c.mirror_percent = C.uint32_t(x.MirrorPercent)
	}
	return ret(C.ilbgo_router_set_routes(r.ptr, croutes, C.size_t(len(routes))))
}

// SetWeights sets the weights of route's backends, one per backend in
// order, at once (ilb_router_set_weights): canary steps (95/5, then
// 80/20, ...). Errors: ErrNotFound (no such route), ErrInvalid (not one
// weight per backend; all 0), ErrRange.
func (r *Router) SetWeights(route string, weights []uint32) error {
	if r.ptr == nil {
		return errRouterClosed
	}
	if hasNUL(route) {
		return ErrInvalid
	}
	var mem cstrs
	defer mem.free()
	var w *C.uint32_t
	if len(weights) > 0 {
		w = (*C.uint32_t)(unsafe.Pointer(&weights[0]))
	}
	return ret(C.ilbgo_router_set_weights(r.ptr, mem.str(route), w, C.size_t(len(weights))))
}

// RateLimit is a rate limit (ilb_rate_limit): GCRA, a bucket of Burst
// tokens refilled at Rate per Period, one bucket per key. The key is the
// request's affinity key (Request.Key; a request without one is not
// limited), or the value of the attribute KeyAttr ("x-api-key", "tenant",
// "model"; a request without it is not limited), or, Global, one key for
// every request.
type RateLimit struct {
	Name    string // 1..IDMax bytes, unique
	KeyAttr string
	Global  bool          // one bucket for all requests (KeyAttr must be "")
	Rate    uint64        // requests per Period, >= 1
	Period  time.Duration // whole ms (rounded up), up to a day; 0 = 1 s
	Burst   uint64        // bucket size, 1..Rate*1000; 0 = 1
}

// SetRateLimits replaces the rate limits (ilb_router_set_rate_limits);
// every request is checked against all of them, after its pool is
// resolved. A limit that keeps its name and parameters keeps its buckets;
// others start full. None removes them. A pick over a limit returns
// ErrRateLimit with RetryAfter. Errors: ErrInvalid (an empty name, Rate 0,
// Period or Burst out of range, Global with a KeyAttr), ErrExists (two
// limits with one name), ErrTooBig.
func (r *Router) SetRateLimits(limits []RateLimit) error {
	if r.ptr == nil {
		return errRouterClosed
	}
	var mem cstrs
	defer mem.free()
	var cl *C.ilb_rate_limit
	if len(limits) > 0 {
		cl = (*C.ilb_rate_limit)(mem.alloc(len(limits), unsafe.Sizeof(C.ilb_rate_limit{})))
	}
	cs := unsafe.Slice(cl, len(limits))
	for i, x := range limits {
		c := &cs[i]
		C.ilb_rate_limit_init(c)
		if hasNUL(x.Name) || hasNUL(x.KeyAttr) || (x.Global && x.KeyAttr != "") || x.Period < 0 {
			return ErrInvalid
		}
		c.name = mem.str(x.Name)
		switch {
		case x.Global:
			c.key_attr = mem.str("")
		case x.KeyAttr != "":
			c.key_attr = mem.str(x.KeyAttr)
		}
		c.rate = C.uint64_t(x.Rate)
		if x.Period > 0 {
			c.period_ms = C.uint64_t(ceilMS(x.Period))
		}
		if x.Burst > 0 {
			c.burst = C.uint64_t(x.Burst)
		}
	}
	return ret(C.ilbgo_router_set_rate_limits(r.ptr, cl, C.size_t(len(limits))))
}

// ceilMS is d in whole milliseconds, rounded up (d >= 0).
func ceilMS(d time.Duration) uint64 {
	ms := uint64(d / time.Millisecond)
	if d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// Pin sends the requests of session key routed to pool (model, version)
// to replicaID while it can take them (ilb_router_pin), for ttl (whole ms,
// rounded up; 0 = OptRouterStickyTTLMS). Errors: ErrInvalid (empty key,
// sticky sessions off, ttl < 0), ErrNoModel (no such pool), ErrNotFound
// (no such replica), ErrRange (ttl over the TTL option's maximum).
func (r *Router) Pin(key []byte, model, version, replicaID string, ttl time.Duration) error {
	if ttl < 0 || replicaID == "" {
		return ErrInvalid
	}
	return r.pin(key, model, version, &replicaID, ceilMS(ttl))
}

// Unpin forgets session key in pool (model, version).
func (r *Router) Unpin(key []byte, model, version string) error {
	return r.pin(key, model, version, nil, 0)
}

func (r *Router) pin(key []byte, model, version string, replicaID *string, ttlMS uint64) error {
	if r.ptr == nil {
		return errRouterClosed
	}
	if len(key) == 0 || hasNUL(model) || hasNUL(version) || (replicaID != nil && hasNUL(*replicaID)) {
		return ErrInvalid
	}
	var mem cstrs
	defer mem.free()
	var rid *C.char
	if replicaID != nil {
		rid = mem.str(*replicaID)
	}
	return ret(C.ilbgo_router_pin(r.ptr, unsafe.Pointer(&key[0]), C.size_t(len(key)),
		mem.str(model), mem.str(version), rid, C.uint64_t(ttlMS)))
}

// RouteResult is the answer of Router.Pick (ilb_route_result). Its Ticket
// is the request's: ReplicaID and HostData of the replica (for a pair, the
// decode replica), to complete once with Router.Complete (a pair: both
// halves) or Router.CompletePair.
type RouteResult struct {
	Ticket
	Pool    *Pool  // the pool it is in
	Model   string // that pool's model and version
	Version string
	Route   int  // index of the route that matched; -1: routed by model
	Backend int  // index of the route's backend; -1
	Sticky  bool // the session's replica was reused

	// A prefill/decode pair (the pool's role is RoleDecode): the prefill
	// replica (Prefill.ID is 0: the pair completes under Ticket); else
	// Prefill.Pool is nil.
	Prefill Target
	// A copy of the request for the route's mirror pool: the host sends
	// it, ignores its answer, and completes Mirror.Ticket like any ticket.
	// Mirror.ID is 0 when there is none (no mirror, not this request, or
	// the mirror's pick failed, which never fails the request).
	Mirror Target
}

// Target is a replica a RouteResult names besides its own.
type Target struct {
	Ticket
	Pool *Pool
}

// IsPair reports whether the result is a prefill/decode pair.
func (r RouteResult) IsPair() bool { return r.Prefill.Pool != nil }

// cptr is the router as an integer for the pick/complete shims (no boxing
// for cgo's pointer check, which allocates).
func (r *Router) cptr() C.uintptr_t { return C.uintptr_t(uintptr(unsafe.Pointer(r.ptr))) }

func (r *Router) cancel(ticket C.uint64_t) {
	res := C.ilbgo_router_complete(r.cptr(), ticket, C.int32_t(OutcomeCancelled), 0, 0, 0, 0, 0)
	if res.panic != 0 {
		takePanic(res.panic) // a second panic: the first one is raised
	}
}

// Pick resolves the request's pool, checks the rate limits and picks its
// replica (ilb_router_pick). req may be nil: then only a default route can
// match. Every success must be followed by exactly one Complete or
// CompletePair of its Ticket, and one Complete of Mirror.Ticket when
// Mirror.ID is not 0. Errors: ErrNoModel, ErrRateLimit (with RetryAfter),
// the pool's (ErrNoReplica, ErrSaturated, ErrShed, ErrNoKey, ErrTickets),
// ErrInvalid (a bad request, a NUL in Model, Zone or Attrs). Safe for
// concurrent use; no allocation on success.
func (r *Router) Pick(req *Request) (RouteResult, error) {
	if r.ptr == nil {
		return RouteResult{}, errRouterClosed
	}
	var a reqArgs
	var q Request
	withReq := C.int(0)
	if req != nil {
		var ok bool
		if a, ok = req.args(); !ok {
			return RouteResult{}, ErrInvalid
		}
		defer a.release()
		q, withReq = *req, 1
	}
	for attempt := 0; ; attempt++ {
		res := C.ilbgo_router_pick(r.cptr(), withReq, a.key, C.size_t(len(q.Key)),
			a.blocks, C.size_t(len(q.BlockHashes)), a.prompt, C.size_t(len(q.Prompt)),
			a.model, C.size_t(len(q.Model)), a.attrs, C.size_t(a.attrsLen), C.size_t(a.nAttrs),
			a.zone, C.size_t(len(q.Zone)),
			C.uint32_t(q.PromptTokens), C.uint32_t(q.OutputTokens), C.int32_t(q.Priority))
		if res.rc != 0 {
			err := errFor(C.int(res.rc))
			if res.panic != 0 { // a callback's panic during this pick
				raise(res.panic, err)
			}
			return RouteResult{Ticket: Ticket{RetryAfter: time.Duration(res.retry_after_ns)}}, err
		}
		if res.panic != 0 {
			// The caller gets the panic, not the tickets: release them.
			r.cancel(res.ticket)
			if res.mirror_ticket != 0 {
				r.cancel(res.mirror_ticket)
			}
			raise(res.panic, nil)
		}
		if out, ok := r.result(&res); ok {
			return out, nil
		}
		// A replica it chose was removed (its handle deleted) meanwhile:
		// the tickets were given back; a pick starting now no longer sees
		// that replica.
		if attempt >= maxPickRetries {
			return RouteResult{}, errPickRaced
		}
	}
}

// result maps a pick's C answer to the binding's records; ok false (and
// the tickets released) when a replica's record is gone.
func (r *Router) result(res *C.ilbgo_route_ret) (RouteResult, bool) {
	pools := *r.pools.Load()
	rp := pools[uintptr(res.pool)]
	var rec, prec *replicaRec
	var pp *routerPool
	if rp != nil {
		rec = recFrom(uintptr(res.host_data))
	}
	if rec != nil && res.prefill_pool != 0 {
		if pp = pools[uintptr(res.prefill_pool)]; pp != nil {
			prec = recFrom(uintptr(res.prefill_host_data))
		}
	}
	if rec == nil || (res.prefill_pool != 0 && prec == nil) {
		r.cancel(res.ticket)
		if res.mirror_ticket != 0 {
			r.cancel(res.mirror_ticket)
		}
		return RouteResult{}, false
	}
	out := RouteResult{
		Ticket: Ticket{ID: uint64(res.ticket), ReplicaID: rec.id, HostData: rec.data},
		Pool:   rp.pool, Model: rp.model, Version: rp.version,
		Route: int(res.route), Backend: int(res.backend), Sticky: res.sticky != 0,
	}
	if prec != nil {
		out.Prefill = Target{Ticket: Ticket{ReplicaID: prec.id, HostData: prec.data}, Pool: pp.pool}
	}
	if res.mirror_ticket != 0 {
		mp := pools[uintptr(res.mirror_pool)]
		var mrec *replicaRec
		if mp != nil {
			mrec = recFrom(uintptr(res.mirror_host_data))
		}
		if mrec == nil { // a mirror never fails the request
			r.cancel(res.mirror_ticket)
		} else {
			out.Mirror = Target{Ticket: Ticket{ID: uint64(res.mirror_ticket), ReplicaID: mrec.id,
				HostData: mrec.data}, Pool: mp.pool}
		}
	}
	return out, true
}

// Complete finishes the request of a router ticket (ilb_router_complete):
// a RouteResult's Ticket (a pair: both halves, with this outcome) or its
// Mirror.Ticket. Errors as Pool.Complete: ErrStale (unknown or completed),
// ErrRemoved (released; its replica was removed), ErrInvalid (a bad
// outcome: the ticket stays valid). Safe for concurrent use; no
// allocation.
func (r *Router) Complete(t Ticket, o Outcome) error {
	if r.ptr == nil {
		return errRouterClosed
	}
	if !validHTTPStatus(o.HTTPStatus) {
		return ErrInvalid
	}
	res := C.ilbgo_router_complete(r.cptr(), C.uint64_t(t.ID), C.int32_t(o.Status), C.int32_t(o.HTTPStatus),
		C.uint64_t(nonNeg(o.Latency)), C.uint64_t(nonNeg(o.TTFT)),
		C.uint32_t(o.PromptTokens), C.uint32_t(o.OutputTokens))
	if res.panic != 0 {
		raise(res.panic, errFor(res.rc))
	}
	return errFor(res.rc)
}

// CompletePair finishes a prefill/decode pair with an outcome per half
// (ilb_router_complete_pair), so a failing prefill replica is charged for
// its own failures. Errors as Complete; ErrInvalid for a ticket that is
// not a pair's (nothing changes); ErrRemoved when a half's replica was
// removed (the other half is recorded, the ticket released).
func (r *Router) CompletePair(t Ticket, prefill, decode Outcome) error {
	if r.ptr == nil {
		return errRouterClosed
	}
	if !validHTTPStatus(prefill.HTTPStatus) || !validHTTPStatus(decode.HTTPStatus) {
		return ErrInvalid
	}
	res := C.ilbgo_router_complete_pair(r.cptr(), C.uint64_t(t.ID),
		C.int32_t(prefill.Status), C.int32_t(prefill.HTTPStatus),
		C.uint64_t(nonNeg(prefill.Latency)), C.uint64_t(nonNeg(prefill.TTFT)),
		C.uint32_t(prefill.PromptTokens), C.uint32_t(prefill.OutputTokens),
		C.int32_t(decode.Status), C.int32_t(decode.HTTPStatus),
		C.uint64_t(nonNeg(decode.Latency)), C.uint64_t(nonNeg(decode.TTFT)),
		C.uint32_t(decode.PromptTokens), C.uint32_t(decode.OutputTokens))
	if res.panic != 0 {
		raise(res.panic, errFor(res.rc))
	}
	return errFor(res.rc)
}
