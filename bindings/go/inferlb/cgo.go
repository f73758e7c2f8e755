// Package inferlb is the Go binding of libinferlb, the decision engine of a
// load balancer for ML / LLM inference replicas: a Pool of replicas, a
// routing policy, Pick to choose a replica for a request and Complete to
// report how it ended, telemetry from the replicas' /metrics (Scrape);
// since 0.6 a Router over pools (routes, splits, mirrors, rate limits,
// sticky sessions, prefill/decode pairs), Pool.Autoscale and
// StatsPrometheus.
//
// # Building
//
// The package is cgo. It compiles against the header in the source tree
// (include/inferlb/inferlb.h, found relative to this directory) and links
// with -linferlb. For an installed library nothing else is needed; for a
// build tree, point the linker at it:
//
//	CGO_LDFLAGS="-L/path/to/build -Wl,-rpath,/path/to/build" go test ./...
//
// # Concurrency
//
// Every Pool method may be called from any number of goroutines at once,
// except Close, which must be called once, after every other call on the
// pool has returned. Pick, Complete, Retry and Option never wait for a
// writer (Retry takes the retry budget's own short lock, and the
// RetryState's mutex); Replica, Count, Health and PrefixStats take the
// pool's mutex briefly, so they wait for a writer in progress (from inside
// an event or log callback, which holds that mutex, Replica and Count still
// work; PrefixStats returns ErrDeadlock); AddReplica, RemoveReplica,
// SetWeight, SetAvailable, SetOption, Report, HealthReport, NextDue, Drain,
// CancelDrain, KVEvent and the batch calls are serialised by the pool. A RetryState belongs to one request; Retry
// calls sharing one are serialised by its mutex.
//
// The callbacks given to NewPool (WithClock, WithEventHandler, WithLogger)
// run on the goroutine of the call that triggered them; event and log
// callbacks run with the pool's lock held: they may call Pick, Complete,
// Replica, Option and Count, but a writer call on the same pool from inside
// them returns ErrDeadlock. A panic in a callback is recovered in the
// binding (it must not unwind through the C library, which holds its
// lock) and raised again when the pool method that triggered it returns
// -- by that call only, never by a concurrent one (the panic is kept per C
// call, on its thread). Only the first panic of a call is kept. If the C
// call failed as well, the value raised is a *CallbackPanic holding the
// panic and the error. A Pick whose clock callback panicked releases its
// ticket before raising the panic.
//
// A Scrape is used by one goroutine at a time (its methods lock).
//
// A Router's Pick, Complete and CompletePair take no lock and may run on
// any number of goroutines; its other methods are serialised by the
// router; Close is called once, last. A callback of one of its pools (or
// of the router: WithClock, WithLogger) that panics during Router.Pick
// makes Pick raise the panic, after releasing the tickets.
//
// # Memory
//
// No Go pointer is kept by C. User data (the callbacks, ReplicaSpec.HostData)
// reaches C as a runtime/cgo.Handle, an integer; a replica's handle is
// deleted when the replica is removed (inside a batch: at the outermost
// BatchCommit, as picks see the replica until then) or the pool closed --
// for a pool in a Router, when both the pool and the router are closed.
// Request keys, block hashes, prompts, models, attributes and zones, KV
// events' block hashes and metric pages are passed as call arguments,
// which C reads during the call only (attributes as one buffer of
// "key\0value\0" pairs, recycled); what a router keeps (pool names,
// routes, rate limits) is copied from C memory the binding frees after
// the call. A RouteResult's ids, models and versions come from the
// binding's own records, never from C strings.
package inferlb

/*
#cgo CFLAGS: -I${SRCDIR}/../../../include
#cgo LDFLAGS: -linferlb
#include "shim.h"
*/
import "C"

// Version is ilb_version(): the loaded library's MAJOR*10000+MINOR*100+PATCH.
func Version() uint32 { return uint32(C.ilb_version()) }

// VersionString is ilb_version_string(), e.g. "0.3.0".
func VersionString() string { return C.GoString(C.ilb_version_string()) }

// CheckVersion returns an error when the loaded library's major version is
// not the one this binding was written for. NewPool and NewScrape call it.
func CheckVersion() error {
	if Version()/10000 != VersionMajor || uint32(C.ILB_VERSION_MAJOR) != VersionMajor {
		return &Error{Code: EINVAL, Name: "EINVAL",
			Message: "libinferlb " + VersionString() + " has another major version than this binding"}
	}
	return nil
}

// Hash64 is ilb_hash64: XXH64 of data with a seed, the hash the hashing
// policies apply to request keys (seed 0).
func Hash64(data []byte, seed uint64) uint64 {
	var h C.uint64_t
	var p *C.char
	if len(data) > 0 {
		p = (*C.char)(unsafePtr(&data[0]))
	}
	C.ilb_hash64(&h, unsafePtr(p), C.size_t(len(data)), C.uint64_t(seed))
	return uint64(h)
}
