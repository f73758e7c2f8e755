package inferlb

/*
#include "shim.h"
*/
import "C"

import (
	"sync/atomic"
	"unsafe"
)

// Autoscale is one step of a pool's autoscaling signal (ilb_autoscale):
// what it recommends and why. Feed Recommended to the autoscaler (KEDA,
// an HPA external metric, the host's own).
type Autoscale struct {
	Current     uint32  // replicas in the pool
	Ready       uint32  // of them, routable now
	Desired     uint32  // raw recommendation now (before the windows)
	Recommended uint32  // after the stabilisation windows
	InFlight    uint64  // requests in flight in the pool
	Waiting     uint64  // requests waiting on the replicas (fresh telemetry)
	ArrivalPerS float64 // picks per second since the previous call (0 at the first)
	ServicePerS float64 // requests per second the ready replicas can finish; 0 = unknown
	Utilization float64 // ArrivalPerS / ServicePerS (0 when unknown)
	Overloaded  bool    // arrival > service: add replicas or shed
}

// Autoscale runs one step of the pool's autoscaling signal
// (ilb_pool_autoscale, since 0.6). Call it periodically (every 5 to 30 s):
// the arrival rate is measured between calls, and Recommended follows the
// stabilisation windows (OptScaleUpWindowMS, OptScaleDownWindowMS) over
// the calls' history. Tuned by the OptScale* options. It takes the pool's
// lock (ErrDeadlock from an event or log callback) and reads the host
// clock; O(replicas).
func (p *Pool) Autoscale() (Autoscale, error) {
	if p.ptr == nil {
		return Autoscale{}, errPoolClosed
	}
	var a C.ilb_autoscale
	a.struct_size = C.size_t(unsafe.Sizeof(a))
	if err := ret(C.ilbgo_pool_autoscale(&a, p.ptr)); err != nil {
		return Autoscale{}, err
	}
	return Autoscale{
		Current: uint32(a.current), Ready: uint32(a.ready), Desired: uint32(a.desired),
		Recommended: uint32(a.recommended), InFlight: uint64(a.in_flight), Waiting: uint64(a.waiting),
		ArrivalPerS: float64(a.arrival_per_s), ServicePerS: float64(a.service_per_s),
		Utilization: float64(a.utilization), Overloaded: a.overloaded != 0,
	}, nil
}

// statsSize is the buffer StatsPrometheus starts with: the largest text
// seen so far, so a scrape usually makes one C call.
var statsSize atomic.Int64

func init() { statsSize.Store(16384) }

// StatsPrometheus returns the library's counters and gauges as Prometheus
// text (exposition format 0.0.4; ilb_stats_prometheus, since 0.6): of a
// router's pools (r not nil) or of one pool (p not nil) -- exactly one of
// them, else ErrInvalid. The buffer grows as needed (ErrNoSpace is not
// returned). It takes the router's lock, then each pool's in turn: not
// from a pool's event handler. O(replicas + routes).
func StatsPrometheus(r *Router, p *Pool) (string, error) {
	if (r == nil) == (p == nil) {
		return "", ErrInvalid
	}
	var rp *C.ilb_router
	var pp *C.ilb_pool
	if r != nil {
		if r.ptr == nil {
			return "", errRouterClosed
		}
		rp = r.ptr
	} else {
		if p.ptr == nil {
			return "", errPoolClosed
		}
		pp = p.ptr
	}
	size := statsSize.Load()
	for i := 0; i < 16; i++ { // the text may grow between two calls
		buf := make([]byte, size)
		var n C.size_t
		res := C.ilbgo_stats_prometheus((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(size), &n, rp, pp)
		switch err := ret(res); err {
		case nil:
			if old := statsSize.Load(); size > old {
				statsSize.CompareAndSwap(old, size)
			}
			return string(buf[:n]), nil
		case ErrNoSpace:
			need := int64(n) + 1
			if size *= 2; size < need+need/4+1024 {
				size = need + need/4 + 1024
			}
		default:
			return "", err
		}
	}
	return "", ErrNoSpace
}
