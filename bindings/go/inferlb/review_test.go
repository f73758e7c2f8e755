package inferlb

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// An HTTPStatus outside 0..599 is ErrInvalid and the ticket stays valid;
// it is never wrapped into an int32 (1<<32 + 200 would read as 200).
func TestHTTPStatusOutOfRange(t *testing.T) {
	p, _, _ := healthPool(t, 2)
	tk, err := p.Pick(Request{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []int{1<<32 + 200, 1<<31 + 200, -(1 << 32) + 200, -1, 600, 1 << 40} {
		if err := p.Complete(tk, Outcome{HTTPStatus: s}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Complete HTTPStatus %d: %v", s, err)
		}
		st := NewRetryState()
		if _, err := p.Retry(st, tk, Outcome{Status: OutcomeHTTPError, HTTPStatus: s}, Request{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Retry HTTPStatus %d: %v", s, err)
		}
		if st.Attempts() != 1 {
			t.Fatalf("Retry HTTPStatus %d counted an attempt", s)
		}
	}
	if i := info(t, p, tk.ReplicaID); i.InFlight != 1 || i.Completed != 0 {
		t.Fatalf("the ticket was used: %+v", i)
	}
	if err := p.Complete(tk, Outcome{HTTPStatus: 599}); err != nil { // still valid
		t.Fatal(err)
	}
	if s := status(t, p); s.InFlight != 0 || s.Retries != 0 {
		t.Fatalf("status %+v", s)
	}
}

// Retry holds the RetryState's mutex around the C call: a Retry on a
// state another goroutine holds waits for it.
func TestRetryStateLockedAroundRetry(t *testing.T) {
	p, _, _ := healthPool(t, 2)
	tk, err := p.Pick(Request{})
	if err != nil {
		t.Fatal(err)
	}
	st := NewRetryState()
	st.mu.Lock()
	done := make(chan RetryDecision)
	go func() {
		d, err := p.Retry(st, tk, Outcome{Status: OutcomeConnectError}, Request{})
		if err != nil {
			t.Error(err)
		}
		done <- d
	}()
	select {
	case <-done:
		t.Fatal("Retry ran while the state was locked")
	case <-time.After(50 * time.Millisecond):
	}
	if i := info(t, p, tk.ReplicaID); i.InFlight != 1 {
		t.Fatalf("the ticket was completed under the lock: %+v", i)
	}
	attempts := make(chan int)
	go func() { attempts <- st.Attempts() }()
	select {
	case <-attempts:
		t.Fatal("Attempts read the state while it was locked")
	case <-time.After(20 * time.Millisecond):
	}
	st.mu.Unlock()
	d := <-done
	if n := <-attempts; n < 1 || n > 2 {
		t.Fatalf("attempts %d", n)
	}
	if d.Verdict != RetryYes || st.Attempts() != 2 {
		t.Fatalf("retry %+v, attempts %d", d, st.Attempts())
	}
	p.Complete(d.Ticket, Outcome{})
}

// Goroutines sharing one RetryState: the attempts never pass the limit and
// every ticket is completed.
func TestRetryStateShared(t *testing.T) {
	const max = RetryTriedMax
	p, _, _ := healthPool(t, 4, WithOption(OptRetryMaxAttempts, max),
		WithOption(OptRetryBudgetMinPerS, 1000000))
	for round := 0; round < 200; round++ {
		st := NewRetryState()
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < 4; g++ {
			tk, err := p.Pick(Request{})
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func(tk Ticket) {
				defer wg.Done()
				<-start
				for {
					d, err := p.Retry(st, tk, Outcome{Status: OutcomeConnectError}, Request{})
					if err != nil {
						t.Error(err)
						return
					}
					if d.Verdict != RetryYes {
						return
					}
					tk = d.Ticket
				}
			}(tk)
		}
		close(start)
		wg.Wait()
		if n := st.Attempts(); n > max {
			t.Fatalf("round %d: %d attempts, limit %d", round, n, max)
		}
	}
	if s := status(t, p); s.InFlight != 0 {
		t.Fatalf("status %+v", s)
	}
}
