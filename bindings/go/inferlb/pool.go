package inferlb

/*
#include "shim.h"
*/
import "C"

import (
	"runtime/cgo"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// Pool is a set of interchangeable replicas and the policy that chooses
// among them (an ilb_pool). Create it with NewPool and free it with Close.
type Pool struct {
	ptr  *C.ilb_pool
	hs   *hostState
	host cgo.Handle
}

// Event is one replica state change (ilb_event), given to WithEventHandler.
// Pool-wide events (EventPanic) have no replica: ReplicaID "", HostData
// nil, OldState and NewState 0.
type Event struct {
	Type      EventType
	OldState  State // 0 when none
	NewState  State
	ReplicaID string
	HostData  any    // the replica's ReplicaSpec.HostData
	OldValue  uint64 // old weight (EventReplicaWeight); see EventType
	NewValue  uint64 // new weight
	Timestamp uint64 // host clock, ns
	Reason    Reason // why (since 0.4; ReasonNone for the events of 0.3)
}

type poolConfig struct {
	hs       *hostState
	seed     uint64
	logLevel LogLevel
	policy   any // Policy or string, nil = default
	options  []optVal
}

type optVal struct {
	id OptionID
	v  int64
}

// PoolOption configures NewPool.
type PoolOption func(*poolConfig)

// WithPolicy sets the routing policy, by id (PolicyP2C) or name ("p2c").
func WithPolicy[T Policy | string](p T) PoolOption {
	return func(c *poolConfig) { c.policy = p }
}

// WithSeed seeds the pool's random generator (ilb_host.seed).
func WithSeed(seed uint64) PoolOption { return func(c *poolConfig) { c.seed = seed } }

// WithClock replaces the host clock: monotonic nanoseconds. It is called
// from every goroutine that picks or completes, so it must be safe for
// concurrent use, and it costs a C-to-Go call on those paths.
func WithClock(clock func() uint64) PoolOption {
	return func(c *poolConfig) { c.hs.clock = clock }
}

// WithEventHandler receives replica state changes (see the package doc for
// what it may call).
func WithEventHandler(h func(Event)) PoolOption {
	return func(c *poolConfig) { c.hs.onEvent = h }
}

// WithLogger receives the library's log messages at WithLogLevel (default
// LogWarn) and below.
func WithLogger(l func(level int, msg string)) PoolOption {
	return func(c *poolConfig) { c.hs.logger = l }
}

// WithLogLevel sets the most verbose level delivered to WithLogger.
func WithLogLevel(l LogLevel) PoolOption { return func(c *poolConfig) { c.logLevel = l } }

// WithOption sets a pool option after creation (Pool.SetOption), in order.
func WithOption(id OptionID, value int64) PoolOption {
	return func(c *poolConfig) { c.options = append(c.options, optVal{id, value}) }
}

// NewPool creates an empty pool (ilb_pool_new) and applies the options.
func NewPool(opts ...PoolOption) (*Pool, error) {
	if err := CheckVersion(); err != nil {
		return nil, err
	}
	cfg := poolConfig{hs: &hostState{live: map[cgo.Handle]struct{}{}, owners: 1}, logLevel: LogWarn}
	for _, o := range opts {
		o(&cfg)
	}
	p := &Pool{hs: cfg.hs, host: cgo.NewHandle(cfg.hs)}
	rc := C.ilbgo_pool_new(&p.ptr, C.uintptr_t(p.host), cbool(cfg.hs.clock != nil),
		cbool(cfg.hs.logger != nil), C.int32_t(cfg.logLevel), C.uint64_t(cfg.seed))
	if rc != 0 {
		p.host.Delete()
		return nil, errFor(rc)
	}
	var err error
	switch v := cfg.policy.(type) {
	case Policy:
		err = p.SetOption(OptPolicy, int64(v))
	case string:
		var id Policy
		if id, err = PolicyFromName(v); err == nil {
			err = p.SetOption(OptPolicy, int64(id))
		}
	}
	for _, o := range cfg.options {
		if err != nil {
			break
		}
		err = p.SetOption(o.id, o.v)
	}
	if err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// Close frees the pool (ilb_pool_free) and every handle the binding made
// for it. Outstanding tickets become invalid. It must not race with any
// other call on the pool; later calls return an error. Closing twice is a
// no-op. A pool added to a Router lives on in it (its callbacks and its
// replicas' HostData too) until the router is closed: Close then drops
// only the host's reference.
func (p *Pool) Close() {
	if p.ptr == nil {
		return
	}
	r := C.ilbgo_pool_free(p.ptr)
	p.ptr = nil
	p.release()
	if r.panic != 0 {
		raise(r.panic, nil)
	}
}

// retain counts one more owner of the C pool and of the handles of its
// callbacks and replicas (a Router holding it); release drops one, and the
// last deletes the handles.
func (p *Pool) retain() {
	p.hs.mu.Lock()
	p.hs.owners++
	p.hs.mu.Unlock()
}

func (p *Pool) release() {
	p.hs.mu.Lock()
	if p.hs.owners--; p.hs.owners > 0 {
		p.hs.mu.Unlock()
		return
	}
	for h := range p.hs.live {
		h.Delete()
	}
	p.hs.live = nil
	p.hs.removed = nil
	p.hs.mu.Unlock()
	p.host.Delete()
}

// ReplicaSpec describes a replica to add.
type ReplicaSpec struct {
	ID       string // unique in the pool, 1..IDMax bytes
	Weight   uint32 // relative capacity, 1..WeightMax; 0 means 1
	Capacity uint32 // most requests in flight; 0 = unlimited
	Zone     string // may be empty
	Labels   map[string]string
	HostData any // returned with every Ticket and Event of the replica
}

// AddReplica adds a replica (ilb_replica_add). Errors: ErrExists,
// ErrInvalid, ErrRange, ErrTooBig, ErrDeadlock, ...
func (p *Pool) AddReplica(s ReplicaSpec) error {
	if p.ptr == nil {
		return errPoolClosed
	}
	weight := s.Weight
	if weight == 0 {
		weight = 1
	}
	cid := C.CString(s.ID)
	defer C.free(unsafe.Pointer(cid))
	var czone *C.char
	if s.Zone != "" {
		czone = C.CString(s.Zone)
		defer C.free(unsafe.Pointer(czone))
	}
	var labels *C.ilb_label
	if n := len(s.Labels); n > 0 {
		labels = (*C.ilb_label)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(C.ilb_label{}))))
		arr := unsafe.Slice(labels, n)
		i := 0
		for k, v := range s.Labels {
			arr[i].key, arr[i].value = C.CString(k), C.CString(v)
			i++
		}
		defer func() {
			for i := range arr {
				C.free(unsafe.Pointer(arr[i].key))
				C.free(unsafe.Pointer(arr[i].value))
			}
			C.free(unsafe.Pointer(labels))
		}()
	}
	h := cgo.NewHandle(&replicaRec{id: s.ID, data: s.HostData})
	p.hs.track(h)
	r := C.ilbgo_replica_add(p.ptr, cid, C.uint32_t(weight), C.uint32_t(s.Capacity), czone,
		labels, C.size_t(len(s.Labels)), C.uintptr_t(h))
	if r.rc != 0 {
		p.hs.forget(h)
	}
	return ret(r)
}

// RemoveReplica removes a replica (ilb_replica_remove). Its requests in
// flight may still be completed (Complete then returns ErrRemoved).
func (p *Pool) RemoveReplica(id string) error {
	if p.ptr == nil {
		return errPoolClosed
	}
	cid := C.CString(id)
	defer C.free(unsafe.Pointer(cid))
	return ret(C.ilbgo_replica_remove(p.ptr, cid))
}

// SetWeight changes a replica's weight (ilb_replica_set_weight).
func (p *Pool) SetWeight(id string, weight uint32) error {
	if p.ptr == nil {
		return errPoolClosed
	}
	cid := C.CString(id)
	defer C.free(unsafe.Pointer(cid))
	return ret(C.ilbgo_replica_set_weight(p.ptr, cid, C.uint32_t(weight)))
}

// SetAvailable takes a replica out of (false) or back into (true) every
// policy's choice (ilb_replica_set_available).
func (p *Pool) SetAvailable(id string, available bool) error {
	if p.ptr == nil {
		return errPoolClosed
	}
	cid := C.CString(id)
	defer C.free(unsafe.Pointer(cid))
	var a C.int32_t
	if available {
		a = 1
	}
	return ret(C.ilbgo_replica_set_available(p.ptr, cid, a))
}

// ReplicaInfo is the current state of a replica (ilb_replica_info).
type ReplicaInfo struct {
	HostData       any
	Weight         uint32
	Capacity       uint32
	State          State // StateUnavailable while anything excludes it
	NLabels        uint32
	InFlight       int64
	Completed      uint64
	Failed         uint64
	TokensInFlight uint64
	LatencyEWMAms  float64 // -1 before the first observation

	// Since 0.4.
	Health        Health
	Breaker       Breaker
	Excluded      Excluded // what keeps it out of picks; 0 = nothing
	Ejections     uint32   // its ejection count
	Errors        uint64   // completions counted as errors
	WeightPercent uint32   // effective weight in percent: < 100 in slow start
}

// Replica returns a replica's state (ilb_replica_get). ErrNotFound when
// there is no replica with this id.
func (p *Pool) Replica(id string) (ReplicaInfo, error) {
	if p.ptr == nil {
		return ReplicaInfo{}, errPoolClosed
	}
	cid := C.CString(id)
	defer C.free(unsafe.Pointer(cid))
	var ci C.ilb_replica_info
	ci.struct_size = C.size_t(unsafe.Sizeof(ci))
	if err := ret(C.ilbgo_replica_get(&ci, p.ptr, cid)); err != nil {
		return ReplicaInfo{}, err
	}
	info := ReplicaInfo{
		Weight: uint32(ci.weight), Capacity: uint32(ci.capacity), State: State(ci.state),
		NLabels: uint32(ci.n_labels), InFlight: int64(ci.in_flight),
		Completed: uint64(ci.completed), Failed: uint64(ci.failed),
		TokensInFlight: uint64(ci.tokens_in_flight), LatencyEWMAms: float64(ci.latency_ewma_ms),
		Health: Health(ci.health), Breaker: Breaker(ci.breaker), Excluded: Excluded(ci.excluded),
		Ejections: uint32(ci.ejections), Errors: uint64(ci.errors), WeightPercent: uint32(ci.weight_percent),
	}
	if rec := recFrom(uintptr(ci.host_data)); rec != nil {
		info.HostData = rec.data
	}
	return info, nil
}

// Count is the number of replicas (ilb_pool_count).
func (p *Pool) Count() (int, error) {
	if p.ptr == nil {
		return 0, errPoolClosed
	}
	var n C.size_t
	err := ret(C.ilbgo_pool_count(&n, p.ptr))
	return int(n), err
}

// SetOption sets a tunable (ilb_pool_set_option). ErrUnknown, ErrRange,
// ErrBusy, ...
func (p *Pool) SetOption(id OptionID, value int64) error {
	if p.ptr == nil {
		return errPoolClosed
	}
	return ret(C.ilbgo_pool_set_option(p.ptr, C.int32_t(id), C.int64_t(value)))
}

// Option reads a tunable's current value (ilb_pool_get_option).
func (p *Pool) Option(id OptionID) (int64, error) {
	if p.ptr == nil {
		return 0, errPoolClosed
	}
	var v C.int64_t
	err := ret(C.ilbgo_pool_get_option(&v, p.ptr, C.int32_t(id)))
	return int64(v), err
}

// OptionBounds is the range and default of an option (ilb_option_bounds).
func OptionBounds(id OptionID) (min, max, def int64, err error) {
	var lo, hi, d C.int64_t
	err = errFor(C.ilb_option_bounds(&lo, &hi, &d, C.int32_t(id)))
	return int64(lo), int64(hi), int64(d), err
}

// BatchBegin and BatchCommit group writes: picks keep seeing the previous
// snapshot until the outermost commit publishes one new snapshot. The
// HostData of a replica removed inside a batch stays reachable (by picks of
// the old snapshot) until that commit.
func (p *Pool) BatchBegin() error {
	if p.ptr == nil {
		return errPoolClosed
	}
	p.hs.batchBegin()
	r := C.ilbgo_pool_batch_begin(p.ptr)
	if r.rc != 0 {
		p.hs.batchEnd()
	}
	return ret(r)
}

// BatchCommit ends a batch (see BatchBegin).
func (p *Pool) BatchCommit() error {
	if p.ptr == nil {
		return errPoolClosed
	}
	r := C.ilbgo_pool_batch_commit(p.ptr)
	if r.rc == 0 {
		p.hs.batchEnd()
	}
	return ret(r)
}

// String is the policy's name ("p2c"), or "Policy(n)" for an unknown id.
func (p Policy) String() string {
	if s := C.ilb_policy_name(C.int32_t(p)); s != nil {
		return C.GoString(s)
	}
	return "Policy(" + itoa(int64(p)) + ")"
}

// PolicyFromName is the policy with this name; ErrUnknown if none.
func PolicyFromName(name string) (Policy, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var id C.int32_t
	if rc := C.ilb_policy_from_name(&id, cname); rc != 0 {
		return 0, errFor(rc)
	}
	return Policy(id), nil
}

func itoa(v int64) string {
	if v == 0 {
		return "0"
	}
	var b [24]byte
	i := len(b)
	neg := v < 0
	if neg {
		v = -v
	}
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// Request is what the host knows about a request; every field is optional.
// The slices are read during the call only (C keeps no pointer to them).
type Request struct {
	Key          []byte // affinity key for the hashing policies; nil = none
	PromptTokens uint32 // estimates, 0 = unknown
	OutputTokens uint32
	Priority     Priority // load shedding (since 0.4); default PriorityCritical

	// Since 0.5, for PolicyPrefix (ignored by the other policies): the
	// prompt as a chain of block hashes, in order (vLLM's, or the host's
	// own), or as text the library cuts into OptPrefixBlockBytes blocks and
	// hashes as a chain seeded with Model; BlockHashes wins when both are
	// set. Model is the request attribute "model" ("" = none); it must not
	// contain a NUL byte (ErrInvalid).
	BlockHashes []uint64
	Prompt      []byte
	Model       string

	// Since 0.6: the request's other attributes -- headers (lower-case
	// names), ":path", "tenant", ... -- which a Router's routes match and
	// its rate limits key on (the first attribute with a key counts).
	// Read during the call only. No NUL in a key or value, and no "model"
	// when Model is set (ErrInvalid).
	Attrs []Attr
	// Since 0.6: the client's zone, for locality (OptLocality): the pool
	// picks among the replicas of this zone (ReplicaSpec.Zone) while they
	// are healthy and not overloaded. "" = none; no NUL (ErrInvalid).
	Zone string
}

// Attr is a request attribute (an ilb_label of ilb_request.attrs).
type Attr struct {
	Key, Value string
}

// reqArgs are a Request's pointers as cgo call arguments (nil when empty).
// The attributes are encoded into buf ("key\0value\0" pairs), a buffer of
// attrBufs that release gives back.
type reqArgs struct {
	key, blocks, prompt, model, zone, attrs unsafe.Pointer
	attrsLen, nAttrs                        int
	buf                                     *[]byte
}

func (a *reqArgs) release() {
	if a.buf != nil {
		attrBufs.put(a.buf)
		a.buf = nil
	}
}

// attrBufs recycles the attribute buffers: a pick with attributes makes
// no Go allocation once a buffer is there. (Not a sync.Pool, which drops
// buffers at random under the race detector and at every GC.)
var attrBufs bufCache

type bufCache struct {
	slots [16]atomic.Pointer[[]byte]
}

func (c *bufCache) get() *[]byte {
	for i := range c.slots {
		if b := c.slots[i].Swap(nil); b != nil {
			return b
		}
	}
	b := make([]byte, 0, 256)
	return &b
}

func (c *bufCache) put(b *[]byte) {
	if cap(*b) > 1<<16 {
		return // an outsize one: not kept
	}
	for i := range c.slots {
		if c.slots[i].CompareAndSwap(nil, b) {
			return
		}
	}
}

func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// args returns the request's cgo arguments; ok false for a NUL in Model,
// Zone or an attribute, or "model" both in Model and Attrs. Call release
// after the C call.
func (r *Request) args() (a reqArgs, ok bool) {
	if len(r.Key) > 0 {
		a.key = unsafe.Pointer(&r.Key[0])
	}
	if len(r.BlockHashes) > 0 {
		a.blocks = unsafe.Pointer(&r.BlockHashes[0])
	}
	if len(r.Prompt) > 0 {
		a.prompt = unsafe.Pointer(&r.Prompt[0])
	}
	if len(r.Model) > 0 {
		if hasNUL(r.Model) {
			return a, false // C would read the model up to the NUL
		}
		a.model = stringData(r.Model)
	}
	if len(r.Zone) > 0 {
		if hasNUL(r.Zone) {
			return a, false
		}
		a.zone = stringData(r.Zone)
	}
	if len(r.Attrs) > 0 {
		bp := attrBufs.get()
		b := (*bp)[:0]
		for _, at := range r.Attrs {
			if hasNUL(at.Key) || hasNUL(at.Value) || (at.Key == "model" && r.Model != "") {
				*bp = b
				attrBufs.put(bp)
				return reqArgs{}, false
			}
			b = append(append(append(append(b, at.Key...), 0), at.Value...), 0)
		}
		*bp = b
		a.buf, a.attrs, a.attrsLen, a.nAttrs = bp, unsafe.Pointer(&b[0]), len(b), len(r.Attrs)
	}
	return a, true
}

// stringData is the address of s's bytes (len(s) > 0), for a C call that
// reads them during the call only, without a copy (Go 1.19 has no
// unsafe.StringData; a string's header starts with that pointer).
func stringData(s string) unsafe.Pointer {
	return unsafe.Pointer(*(**byte)(unsafe.Pointer(&s)))
}

// Ticket is the answer of Pick. Complete it exactly once.
type Ticket struct {
	ID         uint64
	ReplicaID  string
	HostData   any           // the replica's ReplicaSpec.HostData
	RetryAfter time.Duration // on failure: suggested wait, 0 = none
}

// maxPickRetries bounds how often Pick retries a pick that returned a
// replica removed in the meantime (each retry starts after the removal was
// published, so it cannot return that replica again).
const maxPickRetries = 8

// errPickRaced is Pick's error when every attempt returned a replica
// removed meanwhile (ErrNoReplica for errors.Is).
var errPickRaced = &Error{Code: ENOREPLICA, Name: "ENOREPLICA",
	Message: "no replica: every pick returned a replica removed meanwhile"}

func (p *Pool) cancel(ticket C.uint64_t) {
	r := C.ilbgo_complete(p.cptr(), ticket, C.int32_t(OutcomeCancelled), 0, 0, 0, 0, 0)
	if r.panic != 0 {
		takePanic(r.panic) // a second clock panic: the first one is raised
	}
}

// Pick chooses a replica for the request and counts it in flight
// (ilb_pick). Errors: ErrNoReplica, ErrSaturated, ErrShed (both with
// Ticket.RetryAfter), ErrNoKey, ErrTickets, ErrInvalid (bad priority, a
// NUL in Model, Zone or Attrs). Safe for concurrent use; no allocation on
// success.
func (p *Pool) Pick(req Request) (Ticket, error) {
	if p.ptr == nil {
		return Ticket{}, errPoolClosed
	}
	a, ok := req.args()
	if !ok {
		return Ticket{}, ErrInvalid
	}
	defer a.release()
	for attempt := 0; ; attempt++ {
		r := C.ilbgo_pick(p.cptr(), a.key, C.size_t(len(req.Key)),
			a.blocks, C.size_t(len(req.BlockHashes)), a.prompt, C.size_t(len(req.Prompt)),
			a.model, C.size_t(len(req.Model)), a.attrs, C.size_t(a.attrsLen), C.size_t(a.nAttrs),
			a.zone, C.size_t(len(req.Zone)),
			C.uint32_t(req.PromptTokens), C.uint32_t(req.OutputTokens), C.int32_t(req.Priority))
		if r.rc != 0 {
			err := errFor(C.int(r.rc))
			if r.panic != 0 { // a panic of the clock callback during this pick
				raise(r.panic, err)
			}
			return Ticket{RetryAfter: time.Duration(r.retry_after_ns)}, err
		}
		if r.panic != 0 {
			// The pick succeeded but the caller gets a panic, not the
			// ticket: release it first.
			p.cancel(r.ticket)
			raise(r.panic, nil)
		}
		rec := recFrom(uintptr(r.host_data))
		if rec != nil {
			return Ticket{ID: uint64(r.ticket), ReplicaID: rec.id, HostData: rec.data}, nil
		}
		// Removed (and its handle deleted) since the pick chose it.
		p.cancel(r.ticket)
		if attempt >= maxPickRetries {
			return Ticket{}, errPickRaced
		}
	}
}

// Outcome is how a request ended.
type Outcome struct {
	Status       Status
	HTTPStatus   int           // 0 = none, else 100..599 (else ErrInvalid)
	Latency      time.Duration // end to end, 0 = unknown
	TTFT         time.Duration // time to first token, 0 = unknown
	PromptTokens uint32        // actual tokens, 0 = unknown
	OutputTokens uint32
}

// Complete finishes the request of a ticket (ilb_complete). Errors:
// ErrStale (unknown or already completed ticket), ErrRemoved (the replica
// was removed; the ticket is released), ErrInvalid (bad Status, or
// HTTPStatus not 0 or 100..599 -- never wrapped into an int32: the ticket
// stays valid). Safe for concurrent use; no allocation.
func (p *Pool) Complete(t Ticket, o Outcome) error {
	if p.ptr == nil {
		return errPoolClosed
	}
	if !validHTTPStatus(o.HTTPStatus) {
		return ErrInvalid
	}
	r := C.ilbgo_complete(p.cptr(), C.uint64_t(t.ID), C.int32_t(o.Status), C.int32_t(o.HTTPStatus),
		C.uint64_t(nonNeg(o.Latency)), C.uint64_t(nonNeg(o.TTFT)),
		C.uint32_t(o.PromptTokens), C.uint32_t(o.OutputTokens))
	if r.panic != 0 {
		raise(r.panic, errFor(r.rc))
	}
	return errFor(r.rc)
}

// cptr is the pool as an integer for the pick/complete shims: a pointer
// argument would make cgo box it for its pointer check, which allocates.
func (p *Pool) cptr() C.uintptr_t { return C.uintptr_t(uintptr(unsafe.Pointer(p.ptr))) }

// validHTTPStatus: within 0..599, so the int32 conversion cannot wrap a
// value such as 1<<32 + 200 into a valid status (the library checks the
// rest: 0 or 100..599).
func validHTTPStatus(s int) bool { return s >= 0 && s <= 599 }

func nonNeg(d time.Duration) uint64 {
	if d < 0 {
		return 0
	}
	return uint64(d)
}
