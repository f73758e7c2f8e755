package inferlb

import (
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// zonedPool: a0, a1 in zone eu, b0, b1 in us.
func zonedPool(t testing.TB, opts ...PoolOption) *Pool {
	t.Helper()
	p := newPool(t, append([]PoolOption{WithPolicy(PolicyRoundRobin)}, opts...)...)
	for _, s := range []ReplicaSpec{{ID: "a0", Zone: "eu"}, {ID: "a1", Zone: "eu"},
		{ID: "b0", Zone: "us"}, {ID: "b1", Zone: "us"}} {
		add(t, p, s)
	}
	return p
}

func pickDoneID(t testing.TB, p *Pool, req Request) string {
	t.Helper()
	tk, err := p.Pick(req)
	if err != nil {
		t.Fatalf("Pick(%+v): %v", req, err)
	}
	p.Complete(tk, Outcome{})
	return tk.ReplicaID
}

func TestLocality(t *testing.T) {
	for id, want := range map[OptionID][3]int64{OptLocality: {0, 1, 1},
		OptLocalityMinHealthyPercent: {0, 100, 70}, OptLocalitySpillPercent: {100, 100000, 150}} {
		lo, hi, def, err := OptionBounds(id)
		if err != nil || [3]int64{lo, hi, def} != want {
			t.Errorf("bounds of %d: %d %d %d %v", id, lo, hi, def, err)
		}
	}
	p := zonedPool(t)
	for zone, prefix := range map[string]string{"eu": "a", "us": "b"} {
		for i := 0; i < 20; i++ {
			if id := pickDoneID(t, p, Request{Zone: zone}); id[:1] != prefix {
				t.Fatalf("zone %s: %s", zone, id)
			}
		}
	}
	seen := map[string]bool{}
	for i := 0; i < 40; i++ { // no zone, or one no replica has: all
		zone := ""
		if i%2 == 1 {
			zone = "ap"
		}
		seen[pickDoneID(t, p, Request{Zone: zone})] = true
	}
	if len(seen) != 4 {
		t.Fatal(seen)
	}
	// health spillover: eu keeps 50% of its weight < 70%
	p.SetAvailable("a0", false)
	spilled := false
	for i := 0; i < 40; i++ {
		id := pickDoneID(t, p, Request{Zone: "eu"})
		if id == "a0" {
			t.Fatal("unavailable replica picked")
		}
		spilled = spilled || id[0] == 'b'
	}
	if !spilled {
		t.Fatal("no spillover")
	}
	if _, err := p.Pick(Request{Zone: "e\x00u"}); err != ErrInvalid {
		t.Fatal(err)
	}
	// a retry carries the zone as well
	p.SetAvailable("a0", true)
	tk, _ := p.Pick(Request{Zone: "us"})
	var st RetryState
	d, err := p.Retry(&st, tk, Outcome{Status: OutcomeRefused}, Request{Zone: "us"})
	if err != nil || d.Verdict != RetryYes || d.Ticket.ReplicaID[0] != 'b' || d.Ticket.ReplicaID == tk.ReplicaID {
		t.Fatalf("%+v %v", d, err)
	}
	p.Complete(d.Ticket, Outcome{})
	// and a router pick
	r := newRouter(t)
	addPool(t, r, RouterPoolSpec{Model: "m"}, p)
	for i := 0; i < 10; i++ {
		if res := rpick(t, r, &Request{Model: "m", Zone: "us"}); res.ReplicaID[0] != 'b' {
			t.Fatal(res.ReplicaID)
		}
	}
}

func TestAutoscale(t *testing.T) {
	var now atomic.Uint64
	now.Store(1e12)
	p := newPool(t, WithClock(now.Load), WithOption(OptScaleTargetInFlight, 2))
	for i := 0; i < 4; i++ {
		add(t, p, ReplicaSpec{ID: "r" + itoa(int64(i))})
	}
	step := func() Autoscale {
		t.Helper()
		a, err := p.Autoscale()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := step()
	if a.Current != 4 || a.Ready != 4 || a.InFlight != 0 || a.Desired != 1 || a.Recommended != 1 ||
		a.ArrivalPerS != 0 || a.Overloaded {
		t.Fatalf("%+v", a)
	}
	var tks []Ticket
	for i := 0; i < 10; i++ {
		tk, _ := p.Pick(Request{})
		tks = append(tks, tk)
	}
	now.Add(1e9)
	if a = step(); a.InFlight != 10 || a.Desired != 5 || a.Recommended != 1 || a.ArrivalPerS < 9.99 || a.ArrivalPerS > 10.01 {
		t.Fatalf("%+v", a) // the up window (60 s) still holds a 1
	}
	now.Add(61e9)
	if a = step(); a.Recommended != 5 {
		t.Fatalf("%+v", a)
	}
	for _, tk := range tks {
		p.Complete(tk, Outcome{Latency: 100 * time.Millisecond})
	}
	p.SetAvailable("r0", false)
	now.Add(1e9)
	if a = step(); a.Ready != 3 || a.Desired != 1 || a.Recommended != 5 || a.ServicePerS <= 0 {
		t.Fatalf("%+v", a) // the down window (5 min) holds a 5
	}
	now.Add(301e9)
	if a = step(); a.Recommended != 1 {
		t.Fatalf("%+v", a)
	}
	p.SetOption(OptScaleMinReplicas, 2)
	if a = step(); a.Recommended != 2 {
		t.Fatalf("%+v", a)
	}
	p.Report("r1", Telemetry{Present: SignalBit(SignalRequestsWaiting), RequestsWaiting: 40})
	if a = step(); a.Waiting != 40 || a.Desired != 8 {
		t.Fatalf("%+v", a)
	}
	p.SetOption(OptScaleMaxReplicas, 3)
	if a = step(); a.Desired != 3 {
		t.Fatalf("%+v", a)
	}
	p.Close()
	if _, err := p.Autoscale(); err != errPoolClosed {
		t.Fatal(err)
	}
}

func TestAutoscaleFromCallback(t *testing.T) {
	var p *Pool
	var got error
	p = newPool(t, WithEventHandler(func(Event) { _, got = p.Autoscale() }))
	add(t, p, ReplicaSpec{ID: "r0"})
	if got != ErrDeadlock {
		t.Fatal(got)
	}
}

func TestStatsOfAPool(t *testing.T) {
	p := newPool(t)
	add(t, p, ReplicaSpec{ID: "r0"})
	add(t, p, ReplicaSpec{ID: "we\"ird\\id\nx"})
	tk, _ := p.Pick(Request{})
	p.Complete(tk, Outcome{})
	text, err := StatsPrometheus(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	esc := strings.NewReplacer("\\", "\\\\", "\"", "\\\"", "\n", "\\n").Replace(tk.ReplicaID)
	for _, want := range []string{"# TYPE inferlb_picks_total counter\n",
		`inferlb_picks_total{model="",version="",replica="` + esc + `"} 1` + "\n",
		`replica="we\"ird\\id\nx"`, "inferlb_shed_total"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in\n%s", want, text)
		}
	}
	if strings.Contains(text, "inferlb_no_model_total") {
		t.Error("a router's series in a pool's stats")
	}
}

func TestStatsOfARouter(t *testing.T) {
	r, _, _ := twoVersions(t)
	setRoutes(t, r, Route{Name: "split", Backends: []Backend{{Model: "llama", Version: "v1", Weight: 1},
		{Model: "llama", Version: "v2", Weight: 1}}})
	for i := 0; i < 10; i++ {
		rpick(t, r, nil)
	}
	setRoutes(t, r)
	if _, err := r.Pick(&Request{Model: "other"}); err != ErrNoModel {
		t.Fatal(err)
	}
	text, err := StatsPrometheus(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`model="llama",version="v1",replica="a0"`, `model="llama",version="v2",replica="b1"`,
		"inferlb_no_model_total 1\n", "inferlb_sticky_hits_total", "inferlb_mirrored_total"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in\n%s", want, text)
		}
	}
	picks := 0
	for _, ln := range strings.Split(text, "\n") {
		if strings.HasPrefix(ln, "inferlb_picks_total{") {
			n, _ := strconv.Atoi(ln[strings.LastIndexByte(ln, ' ')+1:])
			picks += n
		}
	}
	if picks != 10 {
		t.Fatalf("%d picks", picks)
	}
}

func TestStatsBufferGrows(t *testing.T) {
	old := statsSize.Load()
	statsSize.Store(16)
	defer statsSize.Store(old)
	p := newPool(t)
	for i := 0; i < 300; i++ {
		add(t, p, ReplicaSpec{ID: "replica-" + itoa(int64(1000+i))})
	}
	text, err := StatsPrometheus(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(text, "inferlb_picks_total{"); n != 300 {
		t.Fatalf("%d series", n)
	}
	if statsSize.Load() <= int64(len(text)) {
		t.Fatal("the size was not remembered")
	}
}

func TestStatsArguments(t *testing.T) {
	p := newPool(t)
	r := newRouter(t)
	if _, err := StatsPrometheus(nil, nil); err != ErrInvalid {
		t.Fatal(err)
	}
	if _, err := StatsPrometheus(r, p); err != ErrInvalid {
		t.Fatal(err)
	}
	p.Close()
	if _, err := StatsPrometheus(nil, p); err != errPoolClosed {
		t.Fatal(err)
	}
	r.Close()
	if _, err := StatsPrometheus(r, nil); err != errRouterClosed {
		t.Fatal(err)
	}
}

// A panic of a callback during a router pick (the router's clock, read for
// sticky sessions and rate limits) is raised by Pick, which releases the
// tickets first.
func TestRouterClockPanic(t *testing.T) {
	var boom atomic.Bool
	p := poolOf(t, "r", 1)
	r := newRouter(t, WithClock(func() uint64 {
		if boom.Load() {
			panic("clock")
		}
		return 1e12
	}))
	addPool(t, r, RouterPoolSpec{Model: "m"}, p)
	keyed := &Request{Model: "m", Key: []byte("session")} // sticky: reads the clock
	rpick(t, r, keyed)
	boom.Store(true)
	if v := catch(func() { r.Pick(keyed) }); v != "clock" {
		t.Fatalf("panic %v", v)
	}
	if inFlight(t, p, "r0") != 0 {
		t.Fatal("ticket kept after the panic")
	}
	boom.Store(false)
	rpick(t, r, &Request{Model: "m"})
	// a pool's clock panicking in a router pick reaches Pick too
	var pboom atomic.Bool
	q := newPool(t, WithClock(func() uint64 {
		if pboom.Load() {
			panic("pool clock")
		}
		return 1e12
	}), WithPolicy(PolicyPeakEWMA))
	add(t, q, ReplicaSpec{ID: "q0"})
	addPool(t, r, RouterPoolSpec{Model: "q"}, q)
	pboom.Store(true)
	v := catch(func() {
		res, err := r.Pick(&Request{Model: "q"})
		if err == nil {
			r.Complete(res.Ticket, Outcome{Latency: time.Millisecond})
		}
	})
	if cp, ok := v.(*CallbackPanic); ok {
		v = cp.Value
	}
	if v != "pool clock" {
		t.Fatalf("panic %v", v)
	}
	pboom.Store(false)
	if inFlight(t, q, "q0") != 0 {
		t.Fatal("q0 in flight")
	}
}
