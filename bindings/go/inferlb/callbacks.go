package inferlb

/*
#include "shim.h"
*/
import "C"

import (
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"unsafe"
)

// hostState is what the pool's ilb_host.user_data (a cgo.Handle) stands
// for: the user's callbacks and the handles of the replicas' records.
type hostState struct {
	clock   func() uint64
	onEvent func(Event)
	logger  func(level int, msg string)

	mu   sync.Mutex
	live map[cgo.Handle]struct{} // replica records not yet deleted

	pending atomic.Pointer[panicBox] // a callback's recovered panic
}

type panicBox struct{ v any }

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

// recoverPanic is deferred by every trampoline: a Go panic must not unwind
// through the library's frames (it may hold the pool's mutex). The panic is
// kept and raised again by the pool method that made the call.
func (hs *hostState) recoverPanic() {
	if v := recover(); v != nil {
		hs.pending.CompareAndSwap(nil, &panicBox{v})
	}
}

func (hs *hostState) rethrow() {
	if hs.pending.Load() != nil {
		if b := hs.pending.Swap(nil); b != nil {
			panic(b.v)
		}
	}
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
	hs := hostFrom(ud)
	defer hs.recoverPanic()
	return C.uint64_t(hs.clock())
}

//export goIlbLog
func goIlbLog(level C.int32_t, msg *C.char, n C.size_t, ud C.uintptr_t) {
	hs := hostFrom(ud)
	defer hs.recoverPanic()
	hs.logger(int(level), C.GoStringN(msg, C.int(n)))
}

//export goIlbEvent
func goIlbEvent(ev *C.ilb_event, ud C.uintptr_t) {
	hs := hostFrom(ud)
	hd := uintptr(unsafe.Pointer(ev.replica_host_data))
	typ := EventType(ev._type)
	if typ == EventReplicaRemoved && hd != 0 {
		// After the user's handler, which may still look at HostData.
		defer hs.forget(cgo.Handle(hd))
	}
	if hs.onEvent == nil {
		return
	}
	defer hs.recoverPanic()
	e := Event{
		Type:      typ,
		OldState:  State(ev.old_state),
		NewState:  State(ev.new_state),
		ReplicaID: C.GoString(ev.replica_id),
		OldValue:  uint64(ev.old_value),
		NewValue:  uint64(ev.new_value),
		Timestamp: uint64(ev.timestamp_ns),
	}
	if rec := recFrom(hd); rec != nil {
		e.HostData = rec.data
	}
	hs.onEvent(e)
}
