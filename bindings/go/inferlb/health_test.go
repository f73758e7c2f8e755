package inferlb

import (
	"errors"
	"runtime/cgo"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const msNS = uint64(time.Millisecond)

// fakeClock is the host clock of these tests.
type fakeClock struct{ now atomic.Uint64 }

func (c *fakeClock) get() uint64             { return c.now.Load() }
func (c *fakeClock) advance(d time.Duration) { c.now.Add(uint64(d)) }

// events collects the events of a pool.
type events struct {
	mu  sync.Mutex
	all []Event
}

func (e *events) add(ev Event) { e.mu.Lock(); e.all = append(e.all, ev); e.mu.Unlock() }

func (e *events) of(typ EventType) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.all {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

func (e *events) reset() { e.mu.Lock(); e.all = nil; e.mu.Unlock() }

// healthPool: n replicas "r0".."r<n-1>" (HostData "R0"...), round robin, a
// fake clock, no probe jitter, and opts.
func healthPool(t *testing.T, n int, opts ...PoolOption) (*Pool, *fakeClock, *events) {
	t.Helper()
	clk := &fakeClock{}
	clk.now.Store(1000 * uint64(time.Second))
	ev := &events{}
	all := append([]PoolOption{WithPolicy(PolicyRoundRobin), WithClock(clk.get),
		WithEventHandler(ev.add), WithOption(OptProbeJitterPercent, 0)}, opts...)
	p := newPool(t, all...)
	for i := 0; i < n; i++ {
		add(t, p, ReplicaSpec{ID: "r" + itoa(int64(i)), HostData: "R" + itoa(int64(i))})
	}
	ev.reset()
	return p, clk, ev
}

func info(t *testing.T, p *Pool, id string) ReplicaInfo {
	t.Helper()
	i, err := p.Replica(id)
	if err != nil {
		t.Fatalf("Replica(%q): %v", id, err)
	}
	return i
}

// picked returns the replicas n pick+complete pairs chose.
func picked(t *testing.T, p *Pool, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := 0; i < n; i++ {
		tk, err := p.Pick(Request{})
		if err != nil {
			t.Fatalf("pick: %v", err)
		}
		out[tk.ReplicaID]++
		if err := p.Complete(tk, Outcome{}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func status(t *testing.T, p *Pool) PoolStatus {
	t.Helper()
	st, err := p.Health()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestHealthReport(t *testing.T) {
	p, clk, ev := healthPool(t, 2, WithOption(OptHealthFall, 2), WithOption(OptHealthRise, 2))
	if err := p.HealthReport("r0", ProbeFail); err != nil {
		t.Fatal(err)
	}
	if i := info(t, p, "r0"); i.Health != HealthHealthy || len(ev.all) != 0 {
		t.Fatalf("one failure of fall 2: %+v, events %+v", i, ev.all)
	}
	clk.advance(5 * time.Millisecond)
	p.HealthReport("r0", ProbeFail)
	i := info(t, p, "r0")
	if i.Health != HealthUnhealthy || i.Excluded != ExcludedHealth || i.State != StateUnavailable {
		t.Fatalf("after fall: %+v", i)
	}
	want := Event{Type: EventHealth, OldState: StateActive, NewState: StateUnavailable, ReplicaID: "r0",
		HostData: "R0", OldValue: uint64(HealthHealthy), NewValue: uint64(HealthUnhealthy),
		Timestamp: clk.get(), Reason: ReasonProbeFailed}
	if len(ev.all) != 1 || ev.all[0] != want {
		t.Fatalf("events %+v, want %+v", ev.all, want)
	}
	if got := picked(t, p, 10); got["r0"] != 0 {
		t.Fatalf("an unhealthy replica was picked: %v", got)
	}
	p.HealthReport("r0", ProbePass)
	if info(t, p, "r0").Health != HealthUnhealthy {
		t.Fatal("one pass of rise 2 brought it back")
	}
	p.HealthReport("r0", ProbePass)
	if i := info(t, p, "r0"); i.Health != HealthHealthy || i.Excluded != 0 || i.State != StateActive {
		t.Fatalf("after rise: %+v", i)
	}
	if last := ev.all[len(ev.all)-1]; last.Reason != ReasonProbePassed || last.Reason.String() != "probe_passed" {
		t.Fatalf("last event %+v", last)
	}
	if got := picked(t, p, 10); got["r0"] != 5 || got["r1"] != 5 {
		t.Fatalf("back in picks: %v", got)
	}
	// Not ready (model loading): alive, STARTING at once from UNHEALTHY.
	p.HealthReport("r1", ProbeFail)
	p.HealthReport("r1", ProbeFail)
	p.HealthReport("r1", ProbeNotReady)
	if h := info(t, p, "r1").Health; h != HealthStarting || h.String() != "starting" {
		t.Fatalf("r1 health %v", h)
	}
	if err := p.HealthReport("nope", ProbePass); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	if err := p.HealthReport("r0", ProbeResult(7)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad result: %v", err)
	}
	if Health(9).String() != "Health(9)" || BreakerHalfOpen.String() != "half_open" || Reason(-1).String() != "Reason(-1)" {
		t.Fatal("names")
	}
}

func sortDue(d []Due) []Due {
	sort.Slice(d, func(i, j int) bool {
		if d[i].ReplicaID != d[j].ReplicaID {
			return d[i].ReplicaID < d[j].ReplicaID
		}
		return d[i].Kind < d[j].Kind
	})
	return d
}

func TestNextDue(t *testing.T) {
	p, clk, _ := healthPool(t, 2, WithOption(OptProbeIntervalMS, 1000),
		WithOption(OptProbeUnhealthyIntervalMS, 200), WithOption(OptHealthFall, 1))
	due, next, err := p.NextDue(16)
	if err != nil {
		t.Fatal(err)
	}
	want := []Due{{"r0", "R0", DueProbe, HealthHealthy}, {"r1", "R1", DueProbe, HealthHealthy}}
	if got := sortDue(due); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("due %+v", due)
	}
	if next != clk.get()+1000*msNS {
		t.Fatalf("next %d, now %d", next, clk.get())
	}
	if due, n2, _ := p.NextDue(16); len(due) != 0 || n2 != next {
		t.Fatalf("called again: %+v %d", due, n2)
	}
	clk.now.Store(next)
	due, n2, _ := p.NextDue(1)
	if len(due) != 1 || n2 != clk.get() { // more than the limit: call again now
		t.Fatalf("limit 1: %+v next %d now %d", due, n2, clk.get())
	}
	due2, _, _ := p.NextDue(1)
	if len(due2) != 1 || due2[0].ReplicaID == due[0].ReplicaID {
		t.Fatalf("second: %+v after %+v", due2, due)
	}
	// An unhealthy replica is probed at the shorter interval.
	p.HealthReport("r0", ProbeFail)
	_, next, _ = p.NextDue(16)
	if next != clk.get()+200*msNS {
		t.Fatalf("next after failure %d, now %d", next, clk.get())
	}
	clk.now.Store(next)
	due, _, _ = p.NextDue(16)
	if len(due) != 1 || due[0] != (Due{"r0", "R0", DueProbe, HealthUnhealthy}) {
		t.Fatalf("unhealthy probe %+v", due)
	}
	// Scrapes, when their interval is set; no probes with interval 0.
	p.SetOption(OptScrapeIntervalMS, 500)
	p.SetOption(OptProbeIntervalMS, 0)
	due, next, _ = p.NextDue(16)
	if len(due) != 2 || due[0].Kind != DueScrape || due[1].Kind != DueScrape || next != clk.get()+500*msNS {
		t.Fatalf("scrapes %+v next %d", due, next)
	}
	// A removed replica is not listed; limit 0 runs the timers only.
	p.RemoveReplica("r1")
	clk.now.Store(next)
	if due, n, err := p.NextDue(0); len(due) != 0 || n != clk.get() || err != nil {
		t.Fatalf("limit 0: %+v %d %v", due, n, err)
	}
	if due, _, _ = p.NextDue(16); len(due) != 1 || due[0].ReplicaID != "r0" {
		t.Fatalf("after remove %+v", due)
	}
	if _, _, err := p.NextDue(-1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("limit -1: %v", err)
	}
}

func TestHealthInitialUnknown(t *testing.T) {
	p, _, _ := healthPool(t, 0, WithOption(OptHealthInitial, int64(HealthUnknown)))
	add(t, p, ReplicaSpec{ID: "a", HostData: "A"})
	if _, err := p.Pick(Request{}); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("pick before the first probe: %v", err)
	}
	due, _, _ := p.NextDue(4)
	if len(due) != 1 || due[0] != (Due{"a", "A", DueProbe, HealthUnknown}) {
		t.Fatalf("due %+v", due)
	}
	p.HealthReport("a", ProbePass) // one pass is enough from UNKNOWN
	if got := picked(t, p, 1); got["a"] != 1 {
		t.Fatal(got)
	}
}

func TestDrain(t *testing.T) {
	p, clk, ev := healthPool(t, 2)
	tk, err := p.Pick(Request{})
	if err != nil {
		t.Fatal(err)
	}
	id, other := tk.ReplicaID, "r1"
	if id == "r1" {
		other = "r0"
	}
	if err := p.Drain(id, 0); err != nil {
		t.Fatal(err)
	}
	if i := info(t, p, id); i.Excluded != ExcludedDraining || i.State != StateUnavailable {
		t.Fatalf("draining: %+v", i)
	}
	if st := status(t, p); st.Draining != 1 || st.InFlight != 1 {
		t.Fatalf("status %+v", st)
	}
	if got := picked(t, p, 4); got[id] != 0 {
		t.Fatalf("a draining replica was picked: %v", got)
	}
	clk.advance(7 * time.Millisecond)
	completedAt := clk.get()
	p.Complete(tk, Outcome{})
	if len(ev.of(EventDrained)) != 0 {
		t.Fatal("DRAINED before NextDue")
	}
	clk.advance(3 * time.Millisecond)
	p.NextDue(0)
	d := ev.of(EventDrained)
	if len(d) != 1 || d[0].ReplicaID != id || d[0].HostData != "R"+id[1:] || d[0].Reason != ReasonDrainDone ||
		d[0].NewValue != 0 || d[0].Timestamp != completedAt {
		t.Fatalf("drained events %+v (completed at %d)", d, completedAt)
	}
	if err := p.RemoveReplica(id); err != nil { // what a host does then
		t.Fatal(err)
	}
	// None in flight: at once. Cancelled: back, no event.
	ev.reset()
	p.Drain(other, 0)
	if d := ev.of(EventDrained); len(d) != 1 || d[0].Reason != ReasonDrainDone {
		t.Fatalf("idle drain: %+v", ev.all)
	}
	if err := p.CancelDrain(other); err != nil || info(t, p, other).Excluded != 0 || len(ev.all) != 1 {
		t.Fatalf("cancel: %v %+v", err, ev.all)
	}
	// A deadline passes first (1 ns rounds up to 1 ms): NewValue = in flight.
	tk, _ = p.Pick(Request{})
	ev.reset()
	if err := p.Drain(other, time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	clk.advance(999 * time.Microsecond)
	p.NextDue(0)
	if len(ev.all) != 0 {
		t.Fatalf("before the deadline: %+v", ev.all)
	}
	clk.advance(time.Microsecond)
	p.NextDue(0)
	if d := ev.of(EventDrained); len(d) != 1 || d[0].Reason != ReasonDrainDeadline || d[0].NewValue != 1 {
		t.Fatalf("deadline: %+v", ev.all)
	}
	p.Complete(tk, Outcome{})
	if err := p.Drain("nope", 0); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := p.Drain(other, -time.Second); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
}

func TestPoolStatusAndPanic(t *testing.T) {
	p, _, ev := healthPool(t, 3, WithOption(OptHealthFall, 1), WithOption(OptHealthRise, 1))
	if st := status(t, p); st != (PoolStatus{Replicas: 3, Eligible: 3, Healthy: 3}) {
		t.Fatalf("status %+v", st)
	}
	tk, _ := p.Pick(Request{})
	p.HealthReport("r2", ProbeFail)
	p.Drain("r1", 0)
	if st := status(t, p); st != (PoolStatus{Replicas: 3, Eligible: 1, Healthy: 2, Draining: 1, InFlight: 1}) {
		t.Fatalf("status %+v", st)
	}
	p.Complete(tk, Outcome{})
	// r0 alone of the two not drained is healthy: 50%, not below the
	// default threshold. r0 failing too: panic, a pool-wide event.
	p.HealthReport("r0", ProbeFail)
	pe := ev.of(EventPanic)
	if len(pe) != 1 {
		t.Fatalf("panic events %+v", ev.all)
	}
	want := Event{Type: EventPanic, NewValue: 1, Timestamp: pe[0].Timestamp, Reason: ReasonHealthyShare}
	if pe[0] != want {
		t.Fatalf("panic event %+v", pe[0])
	}
	if st := status(t, p); !st.Panic {
		t.Fatalf("status %+v", st)
	}
	// In a panic picks ignore health (not the drain).
	if got := picked(t, p, 10); got["r0"] == 0 || got["r2"] == 0 || got["r1"] != 0 {
		t.Fatalf("picks in a panic %v", got)
	}
	p.HealthReport("r0", ProbePass)
	if pe := ev.of(EventPanic); len(pe) != 2 || pe[1].NewValue != 0 {
		t.Fatalf("panic over: %+v", pe)
	}
}

func TestPassiveHealth(t *testing.T) {
	p, clk, ev := healthPool(t, 3, WithOption(OptOutlierConsecutiveGateway, 2),
		WithOption(OptBreakerConsecutive, 2), WithOption(OptPanicThresholdPercent, 0))
	for n := 0; n < 2; n++ {
		for {
			tk, _ := p.Pick(Request{})
			if tk.ReplicaID == "r0" {
				clk.advance(time.Millisecond)
				p.Complete(tk, Outcome{Status: OutcomeRefused})
				break
			}
			p.Complete(tk, Outcome{})
		}
	}
	i := info(t, p, "r0")
	if i.Excluded&ExcludedEjected == 0 || i.Excluded&ExcludedBreaker == 0 || i.Breaker != BreakerOpen ||
		i.Errors != 2 || i.Failed != 2 || i.Ejections != 1 {
		t.Fatalf("after two refusals: %+v", i)
	}
	if got := picked(t, p, 6); got["r0"] != 0 {
		t.Fatalf("ejected replica picked: %v", got)
	}
	if len(ev.all) != 0 {
		t.Fatalf("events before the timer: %+v", ev.all)
	}
	p.NextDue(0)
	ej, br := ev.of(EventEjected), ev.of(EventBreaker)
	if len(ej) != 1 || ej[0].Reason != ReasonConsecutiveGateway || ej[0].NewValue < 30000*msNS {
		t.Fatalf("ejected events %+v", ej)
	}
	if len(br) != 1 || br[0].Reason != ReasonBreakerConsecutive || Breaker(br[0].NewValue) != BreakerOpen {
		t.Fatalf("breaker events %+v", br)
	}
	if st := status(t, p); st.Ejected != 1 || st.BreakersOpen != 1 || st.Eligible != 2 {
		t.Fatalf("status %+v", st)
	}
	clk.advance(34 * time.Second) // both end: 30 s, and 30 s + up to 10%
	p.NextDue(0)
	if len(ev.of(EventRestored)) != 1 || info(t, p, "r0").Breaker != BreakerHalfOpen {
		t.Fatalf("after 34 s: %+v", ev.all)
	}
	if got := picked(t, p, 9); got["r0"] == 0 {
		t.Fatalf("restored replica not picked: %v", got)
	}
}

func TestSlowStart(t *testing.T) {
	// slow start applies to the policies that use weights
	p, clk, _ := healthPool(t, 0, WithPolicy(PolicyWeightedRoundRobin),
		WithOption(OptSlowStartMS, 10000))
	add(t, p, ReplicaSpec{ID: "a"})
	if w := info(t, p, "a").WeightPercent; w >= 100 {
		t.Fatalf("weight percent at the start %d", w)
	}
	clk.advance(10 * time.Second)
	p.NextDue(0)
	if w := info(t, p, "a").WeightPercent; w != 100 {
		t.Fatalf("weight percent after the window %d", w)
	}
}

func TestRetry(t *testing.T) {
	p, _, _ := healthPool(t, 3, WithPolicy(PolicyP2C), WithOption(OptRetryMaxAttempts, 3))
	tk, err := p.Pick(Request{})
	if err != nil {
		t.Fatal(err)
	}
	var st RetryState // the zero value is ready
	if st.Attempts() != 1 {
		t.Fatalf("attempts %d", st.Attempts())
	}
	d, err := p.Retry(&st, tk, Outcome{Status: OutcomeConnectError}, Request{})
	if err != nil || d.Verdict != RetryYes || d.Err != nil || st.Attempts() != 2 {
		t.Fatalf("retry: %+v %v (attempts %d)", d, err, st.Attempts())
	}
	if d.Ticket.ReplicaID == tk.ReplicaID || d.Ticket.HostData != "R"+d.Ticket.ReplicaID[1:] || d.Ticket.ID == 0 {
		t.Fatalf("retry ticket %+v after %+v", d.Ticket, tk)
	}
	if d.Backoff < 0 || d.Backoff > 25*time.Millisecond {
		t.Fatalf("backoff %v", d.Backoff)
	}
	if i := info(t, p, tk.ReplicaID); i.InFlight != 0 || i.Failed != 1 {
		t.Fatalf("first attempt's replica %+v", i)
	}
	if err := p.Complete(tk, Outcome{}); !errors.Is(err, ErrStale) {
		t.Fatalf("the first ticket is completed: %v", err)
	}
	// The third attempt goes to the third replica.
	d2, err := p.Retry(&st, d.Ticket, Outcome{Status: OutcomeTimeout, Latency: 5 * time.Millisecond}, Request{})
	if err != nil || d2.Verdict != RetryYes || d2.Ticket.ReplicaID == tk.ReplicaID || d2.Ticket.ReplicaID == d.Ticket.ReplicaID {
		t.Fatalf("second retry: %+v %v", d2, err)
	}
	d3, err := p.Retry(&st, d2.Ticket, Outcome{Status: OutcomeRefused}, Request{})
	if err != nil || d3.Verdict != RetryAttempts || d3.Ticket.ID != 0 {
		t.Fatalf("third retry: %+v %v", d3, err)
	}
	if s := status(t, p); s.Retries != 2 || s.InFlight != 0 {
		t.Fatalf("status %+v", s)
	}
	if _, err := p.Retry(&st, d2.Ticket, Outcome{Status: OutcomeRefused}, Request{}); !errors.Is(err, ErrStale) {
		t.Fatalf("retry of a completed ticket: %v", err)
	}
	if _, err := p.Retry(nil, d2.Ticket, Outcome{}, Request{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil state: %v", err)
	}
}

func TestRetryAvoidsKeyReplica(t *testing.T) {
	p := newPool(t, WithPolicy(PolicyMaglev))
	for i := 0; i < 4; i++ {
		add(t, p, ReplicaSpec{ID: "r" + itoa(int64(i)), HostData: i})
	}
	req := Request{Key: []byte("session-7")}
	for i := 0; i < 10; i++ {
		tk, err := p.Pick(req)
		if err != nil {
			t.Fatal(err)
		}
		d, err := p.Retry(NewRetryState(), tk, Outcome{Status: OutcomeConnectError}, req)
		if err != nil || d.Verdict != RetryYes || d.Ticket.ReplicaID == tk.ReplicaID {
			t.Fatalf("retry from the key's replica %s: %+v %v", tk.ReplicaID, d, err)
		}
		p.Complete(d.Ticket, Outcome{})
	}
}

func TestRetryVerdicts(t *testing.T) {
	p, _, _ := healthPool(t, 2, WithOption(OptRetryOn, RetryOnConnectError|RetryOn5xx))
	try := func(o Outcome) RetryDecision {
		t.Helper()
		tk, err := p.Pick(Request{})
		if err != nil {
			t.Fatal(err)
		}
		d, err := p.Retry(NewRetryState(), tk, o, Request{})
		if err != nil {
			t.Fatalf("retry %+v: %v", o, err)
		}
		if d.Verdict == RetryYes {
			p.Complete(d.Ticket, Outcome{})
		}
		return d
	}
	if d := try(Outcome{HTTPStatus: 200}); d.Verdict != RetryNotRetryable {
		t.Fatalf("success: %+v", d)
	}
	if d := try(Outcome{Status: OutcomeTimeout}); d.Verdict != RetryNotRetryable {
		t.Fatalf("timeout, not in RetryOn: %+v", d)
	}
	if d := try(Outcome{Status: OutcomeHTTPError, HTTPStatus: 503}); d.Verdict != RetryYes {
		t.Fatalf("503: %+v", d)
	}
	// A bad outcome: ErrInvalid, the ticket stays valid.
	tk, _ := p.Pick(Request{})
	if _, err := p.Retry(NewRetryState(), tk, Outcome{HTTPStatus: 42}, Request{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad outcome: %v", err)
	}
	// No replica can take the retry: the pick's error.
	p.SetAvailable("r0", false)
	p.SetAvailable("r1", false)
	d, err := p.Retry(NewRetryState(), tk, Outcome{Status: OutcomeConnectError}, Request{})
	if err != nil || d.Verdict != RetryNoReplica || !errors.Is(d.Err, ErrNoReplica) {
		t.Fatalf("no replica: %+v %v", d, err)
	}
	if s := status(t, p); s.InFlight != 0 {
		t.Fatalf("in flight %d", s.InFlight)
	}
	// The budget.
	p2, _, _ := healthPool(t, 2, WithOption(OptRetryBudgetPercent, 0), WithOption(OptRetryBudgetMinPerS, 0))
	tk, _ = p2.Pick(Request{})
	d, err = p2.Retry(NewRetryState(), tk, Outcome{Status: OutcomeConnectError}, Request{})
	if err != nil || d.Verdict != RetryBudget || status(t, p2).RetriesDeniedBudget != 1 {
		t.Fatalf("budget: %+v %v", d, err)
	}
}

// The replica a retry chose is removed (its handle deleted) before the
// binding looks it up: the ticket is given back and a plain pick is made.
func TestRetryRacingRemoval(t *testing.T) {
	p, _, _ := healthPool(t, 2)
	tk, _ := p.Pick(Request{})
	other := "r1"
	if tk.ReplicaID == "r1" {
		other = "r0"
	}
	p.hs.mu.Lock()
	var h cgo.Handle
	for k := range p.hs.live {
		if recFrom(uintptr(k)).id == other {
			h = k
		}
	}
	p.hs.mu.Unlock()
	p.hs.forget(h)
	d, err := p.Retry(NewRetryState(), tk, Outcome{Status: OutcomeConnectError}, Request{})
	if err != nil || d.Verdict != RetryYes || d.Ticket.ReplicaID != tk.ReplicaID || d.Ticket.HostData != tk.HostData {
		t.Fatalf("retry: %+v %v", d, err)
	}
	p.Complete(d.Ticket, Outcome{})
	if i := info(t, p, other); i.InFlight != 0 || i.Failed != 0 {
		t.Fatalf("the raced replica %+v", i)
	}
}

func TestShed(t *testing.T) {
	p, _, _ := healthPool(t, 2, WithOption(OptPoolMaxInFlight, 1))
	tk, err := p.Pick(Request{})
	if err != nil {
		t.Fatal(err)
	}
	tk2, err := p.Pick(Request{})
	var e *Error
	if !errors.Is(err, ErrShed) || !errors.As(err, &e) || e.Code != ESHED || e.Name != "ESHED" || tk2.RetryAfter < time.Millisecond {
		t.Fatalf("second pick: %+v %v", tk2, err)
	}
	if s := status(t, p); s.Shed != 1 {
		t.Fatalf("status %+v", s)
	}
	p.Complete(tk, Outcome{})
	picked(t, p, 1)
	// Sheddable requests go first, at OptShedPercent of the limit.
	p2, _, _ := healthPool(t, 2, WithOption(OptPoolMaxInFlight, 2), WithOption(OptShedPercent, 50))
	tk, _ = p2.Pick(Request{})
	if _, err := p2.Pick(Request{Priority: PrioritySheddable}); !errors.Is(err, ErrShed) {
		t.Fatalf("sheddable: %v", err)
	}
	tk2, err = p2.Pick(Request{Priority: PriorityCritical})
	if err != nil {
		t.Fatalf("critical: %v", err)
	}
	p2.Complete(tk, Outcome{})
	p2.Complete(tk2, Outcome{})
	if _, err := p2.Pick(Request{Priority: Priority(5)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad priority: %v", err)
	}
}

func TestRefusedOutcome(t *testing.T) {
	p, _, ev := healthPool(t, 1)
	tk, _ := p.Pick(Request{})
	if err := p.Complete(tk, Outcome{Status: OutcomeRefused}); err != nil {
		t.Fatal(err)
	}
	if i := info(t, p, "r0"); i.Failed != 1 || i.Errors != 1 || i.InFlight != 0 {
		t.Fatalf("%+v", i)
	}
	p.SetWeight("r0", 3)
	if ev.all[len(ev.all)-1].Reason != ReasonNone {
		t.Fatalf("0.3 events carry no reason: %+v", ev.all)
	}
}

// A panic of the event handler during NextDue is raised by NextDue; the
// pool stays usable.
func TestNextDuePanic(t *testing.T) {
	p := newPool(t, WithEventHandler(func(e Event) {
		if e.Type == EventDrained {
			panic("drained")
		}
	}))
	add(t, p, ReplicaSpec{ID: "a"})
	tk, _ := p.Pick(Request{})
	p.Drain("a", 0)
	p.Complete(tk, Outcome{})
	if r := catch(func() { p.NextDue(4) }); r != "drained" {
		t.Fatalf("NextDue panicked with %v", r)
	}
	if _, _, err := p.NextDue(4); err != nil {
		t.Fatal(err)
	}
}
