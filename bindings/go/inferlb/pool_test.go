package inferlb

import (
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newPool(t testing.TB, opts ...PoolOption) *Pool {
	t.Helper()
	p, err := NewPool(opts...)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func add(t testing.TB, p *Pool, s ReplicaSpec) {
	t.Helper()
	if err := p.AddReplica(s); err != nil {
		t.Fatalf("AddReplica(%q): %v", s.ID, err)
	}
}

func TestVersion(t *testing.T) {
	if err := CheckVersion(); err != nil {
		t.Fatal(err)
	}
	if v := Version(); v/10000 != VersionMajor || (v/100)%100 < VersionMinor {
		t.Fatalf("library version %d (%s) older than the binding's %d.%d", v, VersionString(), VersionMajor, VersionMinor)
	}
}

func TestErrors(t *testing.T) {
	p := newPool(t)
	if _, err := p.Pick(Request{}); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("pick on empty pool: %v", err)
	}
	_, err := p.Replica("nope")
	var e *Error
	if !errors.As(err, &e) || e.Code != ENOENT || e.Name != "ENOENT" || e.Message != "no replica with this id" {
		t.Fatalf("Replica(nope): %#v", err)
	}
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrStale) {
		t.Fatalf("errors.Is on %v", err)
	}
	if err := p.SetOption(OptP2CChoices, 99); !errors.Is(err, ErrRange) {
		t.Fatalf("P2C_CHOICES 99: %v", err)
	}
	if err := p.SetOption(OptionID(9999), 1); !errors.Is(err, ErrUnknown) {
		t.Fatalf("unknown option: %v", err)
	}
	if _, err := PolicyFromName("nope"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("PolicyFromName: %v", err)
	}
	add(t, p, ReplicaSpec{ID: "a", Capacity: 1})
	if err := p.AddReplica(ReplicaSpec{ID: "a"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if err := p.AddReplica(ReplicaSpec{ID: strings.Repeat("x", IDMax+1)}); !errors.Is(err, ErrTooBig) {
		t.Fatalf("long id: %v", err)
	}
	if err := p.SetWeight("a", WeightMax+1); !errors.Is(err, ErrRange) {
		t.Fatalf("weight: %v", err)
	}
	tk, err := p.Pick(Request{})
	if err != nil || tk.ReplicaID != "a" || tk.ID == 0 {
		t.Fatalf("pick: %+v %v", tk, err)
	}
	if _, err := p.Pick(Request{}); !errors.Is(err, ErrSaturated) {
		t.Fatalf("capacity 1: %v", err)
	}
	if err := p.Complete(tk, Outcome{HTTPStatus: 1000}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad http status: %v", err)
	}
	if err := p.Complete(tk, Outcome{HTTPStatus: 200, Latency: time.Millisecond}); err != nil {
		t.Fatalf("complete: %v", err)
	}
	if err := p.Complete(tk, Outcome{}); !errors.Is(err, ErrStale) {
		t.Fatalf("double complete: %v", err)
	}
	// A ticket whose replica was removed.
	tk, _ = p.Pick(Request{})
	if err := p.RemoveReplica("a"); err != nil {
		t.Fatal(err)
	}
	if err := p.Complete(tk, Outcome{}); !errors.Is(err, ErrRemoved) {
		t.Fatalf("complete after remove: %v", err)
	}
	if err := p.RemoveReplica("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	if err := ErrorFor(-1000); err == nil || err.(*Error).Name != "EUNKNOWNCODE" {
		t.Fatalf("ErrorFor(-1000) = %v", err)
	}
	p.Close()
	if _, err := p.Pick(Request{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("pick after close: %v", err)
	}
}

func TestOptionsAndPolicy(t *testing.T) {
	p := newPool(t, WithPolicy("least_conn"), WithOption(OptScanMax, 4))
	if v, err := p.Option(OptPolicy); err != nil || Policy(v) != PolicyLeastConn {
		t.Fatalf("policy %v %v", v, err)
	}
	if v, _ := p.Option(OptScanMax); v != 4 {
		t.Fatalf("scan max %d", v)
	}
	p2 := newPool(t, WithPolicy(PolicyMaglev), WithOption(OptHashNoKey, NoKeyError))
	add(t, p2, ReplicaSpec{ID: "a"})
	if _, err := p2.Pick(Request{}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("maglev without key: %v", err)
	}
	tk, err := p2.Pick(Request{Key: []byte("user-42")})
	if err != nil {
		t.Fatal(err)
	}
	p2.Complete(tk, Outcome{})
	if _, err := NewPool(WithPolicy("nope")); !errors.Is(err, ErrUnknown) {
		t.Fatalf("bad policy name: %v", err)
	}
	lo, hi, def, err := OptionBounds(OptP2CChoices)
	if err != nil || lo != 2 || hi != 16 || def != 2 {
		t.Fatalf("bounds %d %d %d %v", lo, hi, def, err)
	}
	if PolicyP2C.String() != "p2c" || Policy(99).String() != "Policy(99)" || SignalKVCacheUsage.String() != "kv_cache_usage" || DialectVLLM.String() != "vllm" {
		t.Fatal("names")
	}
	if Hash64(nil, 0) != 0xef46db3751d8e999 { // XXH64 of "" with seed 0
		t.Fatalf("hash %x", Hash64(nil, 0))
	}
	if err := p.BatchBegin(); err != nil {
		t.Fatal(err)
	}
	add(t, p, ReplicaSpec{ID: "x"})
	add(t, p, ReplicaSpec{ID: "y"})
	if err := p.BatchCommit(); err != nil {
		t.Fatal(err)
	}
	if n, err := p.Count(); n != 2 || err != nil {
		t.Fatalf("count %d %v", n, err)
	}
}

func TestCallbacks(t *testing.T) {
	var now atomic.Uint64
	now.Store(1000)
	var mu sync.Mutex
	var events []Event
	var logs []string
	var p *Pool
	var deadlock error
	p = newPool(t,
		WithClock(func() uint64 { return now.Load() }),
		WithEventHandler(func(e Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
			if e.Type == EventReplicaWeight {
				deadlock = p.SetWeight(e.ReplicaID, 7) // a writer from inside
			}
		}),
		WithLogger(func(level int, msg string) {
			mu.Lock()
			logs = append(logs, msg)
			mu.Unlock()
		}),
		WithLogLevel(LogDebug))
	add(t, p, ReplicaSpec{ID: "a", HostData: "host-a"})
	now.Store(2000)
	if err := p.SetWeight("a", 3); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(deadlock, ErrDeadlock) {
		t.Fatalf("writer inside a callback: %v", deadlock)
	}
	now.Store(3000)
	p.SetAvailable("a", false)
	now.Store(4000)
	p.RemoveReplica("a")
	want := []Event{
		{Type: EventReplicaAdded, NewState: StateActive, ReplicaID: "a", HostData: "host-a", NewValue: 1, Timestamp: 1000},
		{Type: EventReplicaWeight, OldState: StateActive, NewState: StateActive, ReplicaID: "a", HostData: "host-a", OldValue: 1, NewValue: 3, Timestamp: 2000},
		{Type: EventReplicaState, OldState: StateActive, NewState: StateUnavailable, ReplicaID: "a", HostData: "host-a", Timestamp: 3000, Reason: ReasonHost},
		{Type: EventReplicaRemoved, OldState: StateUnavailable, NewState: StateRemoved, ReplicaID: "a", HostData: "host-a", Timestamp: 4000},
	}
	if len(events) != len(want) {
		t.Fatalf("events %+v", events)
	}
	for i := range want {
		w, g := want[i], events[i]
		// old/new value of the events other than weight are not specified
		if w.Type != EventReplicaWeight {
			g.OldValue, g.NewValue, w.OldValue, w.NewValue = 0, 0, 0, 0
		}
		if g != w {
			t.Errorf("event %d: got %+v want %+v", i, g, w)
		}
	}
	// A bad report is logged at debug level.
	add(t, p, ReplicaSpec{ID: "b"})
	var tel Telemetry
	tel.Set(SignalKVCacheUsage, 2)
	if err := p.Report("b", tel); !errors.Is(err, ErrRange) {
		t.Fatalf("bad report: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logs) == 0 || !strings.Contains(strings.Join(logs, "\n"), "kv_cache_usage") {
		t.Fatalf("logs %q", logs)
	}
}

func TestCallbackPanic(t *testing.T) {
	p := newPool(t, WithEventHandler(func(e Event) {
		if e.ReplicaID == "boom" {
			panic("boom")
		}
	}))
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v", r)
			}
		}()
		p.AddReplica(ReplicaSpec{ID: "boom"})
		t.Fatal("no panic")
	}()
	// The pool's mutex was not left locked.
	add(t, p, ReplicaSpec{ID: "ok"})
	if n, _ := p.Count(); n != 2 {
		t.Fatalf("count %d", n)
	}
}

type backend struct{ url string }

func TestHostData(t *testing.T) {
	p := newPool(t, WithPolicy(PolicyRoundRobin))
	a, b := &backend{"http://a"}, &backend{"http://b"}
	add(t, p, ReplicaSpec{ID: "a", HostData: a, Zone: "z1", Labels: map[string]string{"gpu": "a100", "model": "llama"}})
	add(t, p, ReplicaSpec{ID: "b", HostData: b, Weight: 5, Capacity: 10})
	seen := map[*backend]string{}
	for i := 0; i < 4; i++ {
		tk, err := p.Pick(Request{})
		if err != nil {
			t.Fatal(err)
		}
		seen[tk.HostData.(*backend)] = tk.ReplicaID
		if err := p.Complete(tk, Outcome{}); err != nil {
			t.Fatal(err)
		}
	}
	if seen[a] != "a" || seen[b] != "b" {
		t.Fatalf("seen %v", seen)
	}
	info, err := p.Replica("b")
	if err != nil || info.HostData.(*backend) != b || info.Weight != 5 || info.Capacity != 10 || info.State != StateActive {
		t.Fatalf("info %+v %v", info, err)
	}
	if info, _ := p.Replica("a"); info.NLabels != 2 || info.Completed != 2 {
		t.Fatalf("info a %+v", info)
	}
	if n := len(p.hs.live); n != 2 {
		t.Fatalf("%d live handles", n)
	}
	p.RemoveReplica("a")
	if n := len(p.hs.live); n != 1 {
		t.Fatalf("%d live handles after remove", n)
	}
	p.Close()
	if p.hs.live != nil {
		t.Fatal("handles left after Close")
	}
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../../tests/fixtures/metrics/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTelemetryParse(t *testing.T) {
	s, err := NewScrape(ScrapeConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	page := readFixture(t, "vllm.txt")
	tel, err := s.Parse(page, 1e9)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := s.Dialect(); d != DialectVLLM {
		t.Fatalf("dialect %v", d)
	}
	check := func(sig Signal, want float64) {
		if v, ok := tel.Get(sig); !ok || v != want {
			t.Errorf("%v = %v, %v; want %v", sig, v, ok, want)
		}
	}
	check(SignalRequestsRunning, 21)
	check(SignalRequestsWaiting, 4)
	check(SignalKVCacheUsage, 0.5)
	check(SignalKVBlockSize, 16)
	if tel.Timestamp != 1e9 {
		t.Errorf("timestamp %d", tel.Timestamp)
	}
	// Fed in pieces, the second page gives the same gauges.
	for i := 0; i < len(page); i += 100 {
		if err := s.Feed(page[i:min(i+100, len(page))]); err != nil {
			t.Fatal(err)
		}
	}
	tel2, err := s.Finish(2e9)
	if err != nil || tel2.KVCacheUsage != 0.5 || tel2.Present&tel.Present != tel.Present {
		t.Fatalf("pieces: %+v %v", tel2, err)
	}
	// Report it and read it back.
	p := newPool(t)
	add(t, p, ReplicaSpec{ID: "r"})
	tel.Timestamp = 0
	if err := p.Report("r", tel); err != nil {
		t.Fatal(err)
	}
	back, err := p.Telemetry("r")
	if err != nil || back.Present != tel.Present || back.RequestsRunning != 21 || back.Stale != 0 {
		t.Fatalf("telemetry back %+v %v", back, err)
	}
	if _, err := p.Telemetry("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	// A parse error says where.
	_, err = s.Parse([]byte("vllm:num_requests_running{a=\"\\q\"} 1\n"), 3e9)
	if !errors.Is(err, ErrParse) || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("parse error: %v", err)
	}
	if _, err := s.Parse([]byte("foo 1\n"), 4e9); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no metric: %v", err)
	}
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func TestCompositePrefersIdle(t *testing.T) {
	p := newPool(t, WithPolicy(PolicyComposite), WithSeed(1))
	add(t, p, ReplicaSpec{ID: "busy"})
	add(t, p, ReplicaSpec{ID: "idle"})
	var busy, idle Telemetry
	busy.Set(SignalRequestsWaiting, 20)
	busy.Set(SignalKVCacheUsage, 0.9)
	busy.Set(SignalGPUUtilization, 0.95)
	idle.Set(SignalRequestsWaiting, 0)
	idle.Set(SignalKVCacheUsage, 0.1)
	idle.Set(SignalGPUUtilization, 0.05)
	if err := p.Report("busy", busy); err != nil {
		t.Fatal(err)
	}
	if err := p.Report("idle", idle); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for i := 0; i < 100; i++ {
		tk, err := p.Pick(Request{})
		if err != nil {
			t.Fatal(err)
		}
		counts[tk.ReplicaID]++
		p.Complete(tk, Outcome{})
	}
	if counts["idle"] < 95 {
		t.Fatalf("composite routed %v", counts)
	}
}

// Goroutines pick and complete while another adds and removes replicas and
// reports telemetry; afterwards nothing is in flight.
func TestConcurrent(t *testing.T) {
	p := newPool(t, WithPolicy(PolicyComposite), WithEventHandler(func(Event) {}))
	stable := []string{"s0", "s1", "s2", "s3"}
	for _, id := range stable {
		add(t, p, ReplicaSpec{ID: id, HostData: id})
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var picks, removed atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			key := []byte{byte(g)}
			for {
				select {
				case <-stop:
					return
				default:
				}
				tk, err := p.Pick(Request{Key: key, PromptTokens: 10})
				if err != nil {
					t.Errorf("pick: %v", err)
					return
				}
				if tk.HostData == nil || tk.HostData.(string) != tk.ReplicaID {
					t.Errorf("ticket %+v", tk)
					return
				}
				err = p.Complete(tk, Outcome{Latency: time.Microsecond})
				if errors.Is(err, ErrRemoved) {
					removed.Add(1)
				} else if err != nil {
					t.Errorf("complete: %v", err)
					return
				}
				picks.Add(1)
			}
		}(g)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		var tel Telemetry
		for i := 0; i < 300; i++ {
			id := "churn" + itoa(int64(i%3))
			if err := p.AddReplica(ReplicaSpec{ID: id, HostData: id}); err != nil {
				t.Errorf("add: %v", err)
				return
			}
			tel.Set(SignalKVCacheUsage, float64(i%10)/10)
			if err := p.Report(stable[i%4], tel); err != nil {
				t.Errorf("report: %v", err)
			}
			if err := p.Report(id, tel); err != nil {
				t.Errorf("report churn: %v", err)
			}
			if err := p.RemoveReplica(id); err != nil {
				t.Errorf("remove: %v", err)
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if picks.Load() == 0 {
		t.Fatal("no picks")
	}
	for _, id := range stable {
		info, err := p.Replica(id)
		if err != nil || info.InFlight != 0 || info.TokensInFlight != 0 {
			t.Fatalf("%s: %+v %v", id, info, err)
		}
	}
	if n := len(p.hs.live); n != len(stable) {
		t.Fatalf("%d live handles, want %d", n, len(stable))
	}
	t.Logf("%d pairs, %d completed after removal", picks.Load(), removed.Load())
}

func TestPickAllocs(t *testing.T) {
	p := newPool(t)
	for i := 0; i < 8; i++ {
		add(t, p, ReplicaSpec{ID: "r" + itoa(int64(i))})
	}
	allocs := testing.AllocsPerRun(1000, func() {
		tk, _ := p.Pick(Request{})
		p.Complete(tk, Outcome{})
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per pick+complete", allocs)
	}
	p.SetOption(OptPolicy, int64(PolicyMaglev))
	key := []byte("session-1234")
	allocs = testing.AllocsPerRun(1000, func() {
		tk, _ := p.Pick(Request{Key: key})
		p.Complete(tk, Outcome{Latency: time.Millisecond})
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per keyed pick+complete", allocs)
	}
}

func BenchmarkPickComplete(b *testing.B) {
	p := newPool(b, WithPolicy(PolicyP2C))
	for i := 0; i < 8; i++ {
		add(b, p, ReplicaSpec{ID: "r" + itoa(int64(i))})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tk, err := p.Pick(Request{})
		if err != nil {
			b.Fatal(err)
		}
		p.Complete(tk, Outcome{})
	}
}
