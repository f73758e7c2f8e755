package inferlb

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func inFlight(t *testing.T, p *Pool, id string) int64 {
	t.Helper()
	info, err := p.Replica(id)
	if err != nil {
		t.Fatalf("Replica(%q): %v", id, err)
	}
	return info.InFlight
}

// catch runs f and returns what it panicked with (nil: no panic).
func catch(f func()) (r any) {
	defer func() { r = recover() }()
	f()
	return nil
}

// A panic of an event handler during one goroutine's SetWeight is raised by
// that SetWeight, never by another goroutine's Pick or Complete (which would
// then leak its ticket).
func TestEventPanicNotStolen(t *testing.T) {
	p := newPool(t, WithEventHandler(func(e Event) {
		if e.Type == EventReplicaWeight {
			panic("handler")
		}
	}))
	add(t, p, ReplicaSpec{ID: "a"})
	var stolen atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if r := catch(func() {
					if tk, err := p.Pick(Request{}); err == nil {
						p.Complete(tk, Outcome{})
					}
				}); r != nil {
					stolen.Add(1)
				}
			}
		}()
	}
	const n = 2000
	writerPanics := 0
	for i := 0; i < n; i++ {
		if r := catch(func() { p.SetWeight("a", uint32(i%5+1)) }); r != nil {
			if r != "handler" {
				t.Fatalf("SetWeight panicked with %v", r)
			}
			writerPanics++
		}
	}
	close(stop)
	wg.Wait()
	if s := stolen.Load(); s != 0 {
		t.Errorf("%d handler panics raised by Pick/Complete", s)
	}
	// Every SetWeight changes the weight except when i%5+1 equals the
	// previous value (never: consecutive i differ) -- the first one sets
	// 1 on a replica of weight 1.
	if writerPanics != n-1 {
		t.Errorf("SetWeight panicked %d times, want %d", writerPanics, n-1)
	}
	if f := inFlight(t, p, "a"); f != 0 {
		t.Errorf("in flight %d after all tickets completed", f)
	}
}

// A panic of the clock during a Pick is raised by that Pick, whose ticket is
// released first.
func TestClockPanicLeaksTicket(t *testing.T) {
	var n int
	var boom bool
	p := newPool(t, WithPolicy("peak_ewma"), WithClock(func() uint64 {
		n++
		if boom {
			boom = false
			panic("clock")
		}
		return uint64(n) * 1000
	}))
	add(t, p, ReplicaSpec{ID: "a", Capacity: 1})
	boom = true
	if r := catch(func() { p.Pick(Request{}) }); r != "clock" {
		t.Fatalf("Pick panicked with %v, want clock", r)
	}
	if boom {
		t.Skip("the pick path did not call the clock")
	}
	if f := inFlight(t, p, "a"); f != 0 {
		t.Fatalf("in flight %d after a panicking Pick", f)
	}
	tk, err := p.Pick(Request{})
	if err != nil {
		t.Fatalf("next Pick: %v", err)
	}
	// And a panic during Complete is raised by it; the ticket is released.
	// (With this policy and outcome, Complete does not read the clock.)
	boom = true
	if r := catch(func() {
		if err := p.Complete(tk, Outcome{}); err != nil {
			t.Errorf("Complete: %v", err)
		}
	}); r != nil && r != "clock" {
		t.Fatalf("Complete panicked with %v", r)
	}
	boom = false
	if f := inFlight(t, p, "a"); f != 0 {
		t.Fatalf("in flight %d after Complete", f)
	}
}

// A replica removed inside a batch is still picked (old snapshot) until the
// commit: the pick gets its HostData, and the handle is freed at the
// outermost commit.
func TestBatchRemoveHostData(t *testing.T) {
	p := newPool(t, WithPolicy("round_robin"))
	add(t, p, ReplicaSpec{ID: "a", HostData: "A"})
	for _, nested := range []bool{false, true} {
		if err := p.BatchBegin(); err != nil {
			t.Fatal(err)
		}
		if nested {
			if err := p.BatchBegin(); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.RemoveReplica("a"); err != nil {
			t.Fatal(err)
		}
		tk, err := p.Pick(Request{})
		if err != nil || tk.ReplicaID != "a" || tk.HostData != "A" {
			t.Fatalf("pick during batch: %+v, %v", tk, err)
		}
		if nested {
			if err := p.BatchCommit(); err != nil {
				t.Fatal(err)
			}
			if tk, err = p.Pick(Request{}); err != nil || tk.HostData != "A" {
				t.Fatalf("pick in the outer batch: %+v, %v", tk, err)
			}
		}
		if err := p.BatchCommit(); err != nil {
			t.Fatal(err)
		}
		p.hs.mu.Lock()
		live, kept := len(p.hs.live), len(p.hs.removed)
		p.hs.mu.Unlock()
		if live != 0 || kept != 0 {
			t.Fatalf("after commit: %d live handles, %d kept", live, kept)
		}
		if err := p.Complete(tk, Outcome{}); err != nil && !errors.Is(err, ErrRemoved) {
			t.Fatalf("Complete after commit: %v", err)
		}
		if _, err := p.Pick(Request{}); !errors.Is(err, ErrNoReplica) {
			t.Fatalf("pick after commit: %v", err)
		}
		add(t, p, ReplicaSpec{ID: "a", HostData: "A"})
	}
}

// A panic of an event handler of pool A raised inside a nested call on pool
// B (made from A's handler) stays with B's call; A's call raises its own.
func TestNestedCallbackPanics(t *testing.T) {
	b := newPool(t, WithEventHandler(func(e Event) { panic("b") }))
	var fromB any
	a := newPool(t, WithEventHandler(func(e Event) {
		if e.Type == EventReplicaAdded {
			fromB = catch(func() { b.AddReplica(ReplicaSpec{ID: "y"}) })
			panic("a")
		}
	}))
	if r := catch(func() { a.AddReplica(ReplicaSpec{ID: "x"}) }); r != "a" {
		t.Fatalf("a.AddReplica panicked with %v, want a", r)
	}
	if fromB != "b" {
		t.Fatalf("b.AddReplica panicked with %v, want b", fromB)
	}
	if r := catch(func() { a.SetWeight("x", 2) }); r != nil {
		t.Fatalf("later call panicked with %v", r)
	}
}
