package inferlb

/*
#include "shim.h"
*/
import "C"

import (
	"runtime/cgo"
	"sync"
	"unsafe"
)

// hostState is what the pool's ilb_host.user_data (a cgo.Handle) stands
// for: the user's callbacks and the handles of the replicas' records.
type hostState struct {
	clock   func() uint64
	onEvent func(Event)
	logger  func(level int, msg string)

	mu      sync.Mutex
	owners  int                     // the host, and a Router holding the pool (Pool.retain)
	live    map[cgo.Handle]struct{} // replica records not yet deleted
	batch   int                     // open batches (BatchBegin .. BatchCommit)
	removed []cgo.Handle            // removed inside a batch: deleted at its commit
}

// replicaRec is what a replica's host_data (a cgo.Handle) stands for.
type replicaRec struct {
	id   string
	data any
}

func (hs *hostState) track(h cgo.Handle) {
	hs.mu.Lock()
	hs.live[h] = struct{}{}
	hs.mu.Unlock()
}

func (hs *hostState) forget(h cgo.Handle) {
	hs.mu.Lock()
	_, ok := hs.live[h]
	delete(hs.live, h)
	hs.mu.Unlock()
	if ok {
		h.Delete()
	}
}

// removedReplica is called on a replica's REMOVED event. Inside a batch,
// picks keep seeing the snapshot that still has the replica until the
// outermost commit, so its handle is kept until then.
func (hs *hostState) removedReplica(h cgo.Handle) {
	hs.mu.Lock()
	if hs.batch > 0 {
		if _, ok := hs.live[h]; ok {
			hs.removed = append(hs.removed, h)
		}
		hs.mu.Unlock()
		return
	}
	hs.mu.Unlock()
	hs.forget(h)
}

// batchBegin counts a batch before ilb_pool_batch_begin is called (a
// removal made just after the C call already belongs to the batch);
// batchEnd undoes it after a successful commit (or a failed begin) and,
// at the outermost one, deletes the handles of the replicas removed in it.
func (hs *hostState) batchBegin() {
	hs.mu.Lock()
	hs.batch++
	hs.mu.Unlock()
}

func (hs *hostState) batchEnd() {
	hs.mu.Lock()
	if hs.batch > 0 {
		hs.batch--
	}
	var del []cgo.Handle
	if hs.batch == 0 {
		del, hs.removed = hs.removed, nil
	}
	hs.mu.Unlock()
	for _, h := range del {
		hs.forget(h)
	}
}

// recoverPanic is deferred by every trampoline: a Go panic must not unwind
// through the library's frames (it may hold the pool's mutex). The panic is
// stored in shim.c's thread-local slot of the shim call that is running on
// this thread -- the pool method that triggered the callback -- and raised
// again by that method (raise) once the C call returned. Only the first
// panic of a call is kept.
func recoverPanic() {
	if v := recover(); v != nil {
		h := cgo.NewHandle(v)
		if C.ilbgo_set_panic(C.uintptr_t(h)) != 0 {
			h.Delete()
		}
	}
}

// CallbackPanic is the panic value raised by a pool method whose C call
// failed (Err) after one of the pool's callbacks panicked with Value. When
// the C call succeeded, the callback's own panic value is raised instead.
type CallbackPanic struct {
	Value any   // what the callback panicked with
	Err   error // what the pool method would have returned
}

// takePanic returns the panic a shim call reported (0: none).
func takePanic(ph C.uintptr_t) (any, bool) {
	if ph == 0 {
		return nil, false
	}
	h := cgo.Handle(ph)
	v := h.Value()
	h.Delete()
	return v, true
}

// ret turns a shim call's result into the method's error, raising again a
// panic of a callback it made.
func ret(r C.ilbgo_ret) error {
	err := errFor(r.rc)
	if r.panic != 0 {
		raise(r.panic, err)
	}
	return err
}

func raise(ph C.uintptr_t, err error) {
	v, _ := takePanic(ph)
	if err != nil {
		panic(&CallbackPanic{Value: v, Err: err})
	}
	panic(v)
}

func hostFrom(ud C.uintptr_t) *hostState {
	return cgo.Handle(ud).Value().(*hostState)
}

// recFrom returns the record of a replica's host_data, or nil when its
// handle was deleted already: a pick can return a replica whose removal
// (and handle deletion) happened after the pick chose it.
func recFrom(hd uintptr) (rec *replicaRec) {
	if hd == 0 {
		return nil
	}
	defer func() {
		if recover() != nil {
			rec = nil
		}
	}()
	rec, _ = cgo.Handle(hd).Value().(*replicaRec)
	return rec
}

//export goIlbClock
func goIlbClock(ud C.uintptr_t) C.uint64_t {
	defer recoverPanic()
	return C.uint64_t(hostFrom(ud).clock())
}

//export goIlbLog
func goIlbLog(level C.int32_t, msg *C.char, n C.size_t, ud C.uintptr_t) {
	defer recoverPanic()
	hostFrom(ud).logger(int(level), C.GoStringN(msg, C.int(n)))
}

//export goIlbEvent
func goIlbEvent(ev *C.ilb_event, ud C.uintptr_t) {
	hs := hostFrom(ud)
	hd := uintptr(unsafe.Pointer(ev.replica_host_data))
	typ := EventType(ev._type)
	if typ == EventReplicaRemoved && hd != 0 {
		// After the user's handler, which may still look at HostData.
		defer hs.removedReplica(cgo.Handle(hd))
	}
	if hs.onEvent == nil {
		return
	}
	defer recoverPanic()
	e := Event{
		Type:      typ,
		OldState:  State(ev.old_state),
		NewState:  State(ev.new_state),
		ReplicaID: C.GoString(ev.replica_id), // "" for NULL (EventPanic)
		OldValue:  uint64(ev.old_value),
		NewValue:  uint64(ev.new_value),
		Timestamp: uint64(ev.timestamp_ns),
		Reason:    Reason(ev.reason),
	}
	if rec := recFrom(hd); rec != nil {
		e.HostData = rec.data
	}
	hs.onEvent(e)
}
