package inferlb

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// poolOf: n replicas prefix0..prefix<n-1>, HostData "prefix/i".
func poolOf(t testing.TB, prefix string, n int, opts ...PoolOption) *Pool {
	t.Helper()
	p := newPool(t, opts...)
	for i := 0; i < n; i++ {
		add(t, p, ReplicaSpec{ID: prefix + itoa(int64(i)), HostData: prefix + "/" + itoa(int64(i))})
	}
	return p
}

func newRouter(t testing.TB, opts ...RouterOption) *Router {
	t.Helper()
	r, err := NewRouter(opts...)
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

func addPool(t testing.TB, r *Router, spec RouterPoolSpec, p *Pool) {
	t.Helper()
	if err := r.AddPool(spec, p); err != nil {
		t.Fatalf("AddPool(%+v): %v", spec, err)
	}
}

// twoVersions: a router with llama v1 (a0, a1) and v2 (b0, b1).
func twoVersions(t testing.TB, opts ...RouterOption) (*Router, *Pool, *Pool) {
	v1, v2 := poolOf(t, "a", 2), poolOf(t, "b", 2)
	r := newRouter(t, append([]RouterOption{WithSeed(3)}, opts...)...)
	addPool(t, r, RouterPoolSpec{Model: "llama", Version: "v1"}, v1)
	addPool(t, r, RouterPoolSpec{Model: "llama", Version: "v2"}, v2)
	return r, v1, v2
}

// rpick picks and completes; the result.
func rpick(t testing.TB, r *Router, req *Request) RouteResult {
	t.Helper()
	res, err := r.Pick(req)
	if err != nil {
		t.Fatalf("Pick(%+v): %v", req, err)
	}
	if err := r.Complete(res.Ticket, Outcome{}); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	return res
}

func setRoutes(t testing.TB, r *Router, routes ...Route) {
	t.Helper()
	if err := r.SetRoutes(routes); err != nil {
		t.Fatalf("SetRoutes: %v", err)
	}
}

func TestRouterConstants(t *testing.T) {
	if RoleBoth != 0 || RolePrefill != 1 || RoleDecode != 2 || MatchExact != 1 || MatchAbsent != 4 {
		t.Fatal("enum values")
	}
	for code, want := range map[int]error{ENOMODEL: ErrNoModel, ERATELIMIT: ErrRateLimit, ENOSPC: ErrNoSpace} {
		if err := ErrorFor(code); err != want || !errors.Is(err, want) {
			t.Errorf("ErrorFor(%d) = %v", code, err)
		}
	}
	lo, hi, def, err := OptionBounds(OptRouterStickyEntries)
	if err != nil || lo != 0 || hi != 16777216 || def != 65536 {
		t.Fatalf("bounds %d %d %d %v", lo, hi, def, err)
	}
}

func TestRouterModelRouting(t *testing.T) {
	r, v1, v2 := twoVersions(t)
	res, err := r.Pick(&Request{Model: "llama"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*Pool{"v1": v1, "v2": v2}[res.Version]
	if res.Model != "llama" || res.Pool != want || res.Pool == nil || res.Route != -1 || res.Backend != -1 {
		t.Fatalf("%+v", res)
	}
	if res.HostData != res.ReplicaID[:1]+"/"+res.ReplicaID[1:] || res.ID == 0 {
		t.Fatalf("HostData %v of %s", res.HostData, res.ReplicaID)
	}
	if res.IsPair() || res.Mirror.ID != 0 || res.Mirror.Pool != nil || res.Sticky {
		t.Fatalf("%+v", res)
	}
	if n := inFlight(t, res.Pool, res.ReplicaID); n != 1 {
		t.Fatalf("in flight %d", n)
	}
	if err := r.Complete(res.Ticket, Outcome{HTTPStatus: 200, Latency: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := r.Complete(res.Ticket, Outcome{}); !errors.Is(err, ErrStale) {
		t.Fatalf("second Complete: %v", err)
	}
	if err := r.Complete(res.Ticket, Outcome{HTTPStatus: 1<<32 + 200}); err != ErrInvalid {
		t.Fatalf("bad status: %v", err)
	}
}

func TestRouterModelWeights(t *testing.T) {
	v1, v2, v3 := poolOf(t, "a", 2), poolOf(t, "b", 2), poolOf(t, "c", 2)
	r := newRouter(t, WithSeed(1))
	addPool(t, r, RouterPoolSpec{Model: "m", Version: "v1", Weight: 3}, v1)
	addPool(t, r, RouterPoolSpec{Model: "m", Version: "v2"}, v2) // 0 means 1
	addPool(t, r, RouterPoolSpec{Model: "m", Version: "v3", RoutesOnly: true}, v3)
	n := map[string]int{}
	for i := 0; i < 4000; i++ {
		n[rpick(t, r, &Request{Model: "m"}).Version]++
	}
	if n["v3"] != 0 || n["v1"] < 2800 || n["v1"] > 3200 {
		t.Fatalf("%v", n)
	}
	setRoutes(t, r, Route{Name: "canary", Matches: []Match{{Key: "x-c", Value: "1"}},
		Backends: []Backend{{Model: "m", Version: "v3", Weight: 1}}})
	res := rpick(t, r, &Request{Model: "m", Attrs: []Attr{{"x-c", "1"}}})
	if res.Version != "v3" || res.Route != 0 || res.Backend != 0 {
		t.Fatalf("%+v", res)
	}
	if err := r.AddPool(RouterPoolSpec{Model: "m", Version: "v4", RoutesOnly: true, Weight: 2},
		poolOf(t, "d", 1)); err != ErrInvalid {
		t.Fatalf("RoutesOnly with a weight: %v", err)
	}
}

func TestRouterNoModel(t *testing.T) {
	r, v1, _ := twoVersions(t)
	for _, req := range []*Request{{Model: "mistral"}, {}, nil} {
		if _, err := r.Pick(req); err != ErrNoModel {
			t.Fatalf("Pick(%+v): %v", req, err)
		}
	}
	if err := r.RemovePool("llama", "v2"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if v := rpick(t, r, &Request{Model: "llama"}).Version; v != "v1" {
			t.Fatal(v)
		}
	}
	if err := r.RemovePool("llama", "v2"); err != ErrNotFound {
		t.Fatal(err)
	}
	tk, _ := r.Pick(&Request{Model: "llama"})
	if err := r.RemovePool("llama", "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Pick(&Request{Model: "llama"}); err != ErrNoModel {
		t.Fatal(err)
	}
	if err := r.Complete(tk.Ticket, Outcome{}); err != nil { // still completes
		t.Fatal(err)
	}
	addPool(t, r, RouterPoolSpec{Model: "llama", Version: "v1"}, v1) // back, same name
	if res := rpick(t, r, &Request{Model: "llama"}); res.Pool != v1 {
		t.Fatal(res.Version)
	}
	if err := r.AddPool(RouterPoolSpec{Model: "llama", Version: "v9"}, poolOf(t, "z", 1)); err != nil {
		t.Fatal(err)
	}
	if err := r.RemovePool("llama", "v9"); err != nil {
		t.Fatal(err)
	}
	if err := r.AddPool(RouterPoolSpec{Model: "other"}, v1); err != ErrBusy {
		t.Fatalf("another name: %v", err)
	}
}

func TestRouterMatchKinds(t *testing.T) {
	r, _, _ := twoVersions(t)
	v2 := []Backend{{Model: "llama", Version: "v2", Weight: 1}}
	setRoutes(t, r,
		Route{Name: "exact", Matches: []Match{{Key: "x-version", Value: "2"}}, Backends: v2},
		Route{Name: "prefix", Matches: []Match{{Key: ":path", Value: "/beta/", Kind: MatchPrefix}}, Backends: v2},
		Route{Name: "both", Matches: []Match{{Key: "x-a", Kind: MatchPresent}, {Key: "x-b", Kind: MatchAbsent}},
			Backends: v2},
		Route{Name: "default", Backends: []Backend{{Model: "llama", Version: "v1", Weight: 1}}})
	cases := []struct {
		attrs []Attr
		route int
	}{
		{[]Attr{{"x-version", "2"}}, 0}, {[]Attr{{"x-version", "22"}}, 3},
		{[]Attr{{":path", "/beta/chat"}}, 1}, {[]Attr{{":path", "/v1/chat"}}, 3},
		{[]Attr{{"x-a", ""}}, 2}, {[]Attr{{"x-a", "1"}, {"x-b", "1"}}, 3}, {nil, 3},
		{[]Attr{{"x-version", "1"}, {"x-version", "2"}}, 3}, // the first counts
	}
	for _, c := range cases {
		res := rpick(t, r, &Request{Attrs: c.attrs})
		wantV := "v2"
		if c.route == 3 {
			wantV = "v1"
		}
		if res.Route != c.route || res.Version != wantV || res.Backend != 0 {
			t.Errorf("%v: route %d version %s", c.attrs, res.Route, res.Version)
		}
	}
	if res := rpick(t, r, nil); res.Route != 3 { // no request: the default
		t.Fatal(res.Route)
	}
	// many attributes (more than the shim's stack array) and a long model
	attrs := make([]Attr, 40)
	for i := range attrs {
		attrs[i] = Attr{"h" + itoa(int64(i)), strings.Repeat("v", 300)}
	}
	attrs[39] = Attr{"x-version", "2"}
	if res := rpick(t, r, &Request{Attrs: attrs, Model: strings.Repeat("m", 200), Zone: strings.Repeat("z", 100)}); res.Route != 0 {
		t.Fatal(res.Route)
	}
}

func TestRouterBackendOfTheRequestsModel(t *testing.T) {
	r := newRouter(t)
	for _, m := range []string{"a", "b"} {
		addPool(t, r, RouterPoolSpec{Model: m}, poolOf(t, m, 1))
		addPool(t, r, RouterPoolSpec{Model: m, Version: "v2", RoutesOnly: true}, poolOf(t, m+"v2-", 1))
	}
	setRoutes(t, r, Route{Name: "v2", Matches: []Match{{Key: "x-v2", Value: "1"}},
		Backends: []Backend{{Version: "v2", Weight: 1}}})
	for _, m := range []string{"a", "b"} {
		if res := rpick(t, r, &Request{Model: m, Attrs: []Attr{{"x-v2", "1"}}}); res.Model != m || res.Version != "v2" || res.Route != 0 {
			t.Fatalf("%+v", res)
		}
		if res := rpick(t, r, &Request{Model: m}); res.Model != m || res.Version != "" || res.Route != -1 {
			t.Fatalf("%+v", res)
		}
	}
	if _, err := r.Pick(&Request{Attrs: []Attr{{"x-v2", "1"}}}); err != ErrNoModel {
		t.Fatal(err)
	}
}

func TestRouterSplitStablePerKey(t *testing.T) {
	r, _, _ := twoVersions(t)
	setRoutes(t, r, Route{Name: "ab", Backends: []Backend{{Model: "llama", Version: "v1", Weight: 50},
		{Model: "llama", Version: "v2", Weight: 50}}})
	first := map[int]string{}
	seen := map[string]bool{}
	for k := 0; k < 200; k++ {
		first[k] = rpick(t, r, &Request{Key: []byte("user-" + itoa(int64(k)))}).Version
		seen[first[k]] = true
	}
	if len(seen) != 2 {
		t.Fatal(seen)
	}
	for k := 0; k < 200; k++ {
		if v := rpick(t, r, &Request{Key: []byte("user-" + itoa(int64(k)))}).Version; v != first[k] {
			t.Fatalf("key %d: %s then %s", k, first[k], v)
		}
	}
	if err := r.SetWeights("ab", []uint32{20, 80}); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 200; k++ { // only keys of v1 move (to v2)
		if v := rpick(t, r, &Request{Key: []byte("user-" + itoa(int64(k)))}).Version; first[k] == "v2" && v != "v2" {
			t.Fatalf("key %d moved from v2", k)
		}
	}
	if err := r.SetWeights("ab", []uint32{100, 0}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if res := rpick(t, r, nil); res.Backend != 0 || res.Version != "v1" {
			t.Fatal(res.Version)
		}
	}
	for _, c := range []struct {
		name string
		w    []uint32
		want error
	}{{"nope", []uint32{1, 1}, ErrNotFound}, {"ab", []uint32{1}, ErrInvalid}, {"ab", nil, ErrInvalid},
		{"ab", []uint32{0, 0}, ErrInvalid}, {"ab", []uint32{WeightMax + 1, 1}, ErrRange}, {"a\x00b", []uint32{1, 1}, ErrInvalid}} {
		if err := r.SetWeights(c.name, c.w); err != c.want {
			t.Errorf("SetWeights(%q, %v) = %v, want %v", c.name, c.w, err, c.want)
		}
	}
}

func TestRouterMirror(t *testing.T) {
	r, _, _ := twoVersions(t)
	shadow := poolOf(t, "s", 1)
	addPool(t, r, RouterPoolSpec{Model: "shadow"}, shadow)
	v1 := []Backend{{Model: "llama", Version: "v1", Weight: 1}}
	setRoutes(t, r, Route{Name: "m", Backends: v1, MirrorModel: "shadow", MirrorPercent: 100})
	res, err := r.Pick(nil)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Mirror
	if m.ID == 0 || m.Pool != shadow || m.ReplicaID != "s0" || m.HostData != "s/0" {
		t.Fatalf("%+v", m)
	}
	if err := r.Complete(res.Ticket, Outcome{}); err != nil {
		t.Fatal(err)
	}
	if inFlight(t, shadow, "s0") != 1 {
		t.Fatal("the mirror completes on its own")
	}
	if err := r.Complete(m.Ticket, Outcome{Status: OutcomeCancelled}); err != nil {
		t.Fatal(err)
	}
	if inFlight(t, shadow, "s0") != 0 {
		t.Fatal("mirror in flight")
	}
	setRoutes(t, r, Route{Name: "m", Backends: v1, MirrorModel: "shadow"})
	if res := rpick(t, r, nil); res.Mirror.ID != 0 || res.Mirror.Pool != nil {
		t.Fatal("mirror at 0%")
	}
	setRoutes(t, r, Route{Name: "m", Backends: v1, MirrorModel: "gone", MirrorPercent: 100})
	if res := rpick(t, r, nil); res.Mirror.ID != 0 {
		t.Fatal("mirror of a missing pool")
	}
}

func TestRouterRouteErrorsKeepOldTable(t *testing.T) {
	r, _, _ := twoVersions(t)
	setRoutes(t, r, Route{Name: "ok", Backends: []Backend{{Model: "llama", Version: "v2", Weight: 1}}})
	b := []Backend{{Model: "llama", Version: "v1", Weight: 1}}
	many := make([]Route, RoutesMax+1)
	for i := range many {
		many[i] = Route{Name: "r" + itoa(int64(i)), Backends: b}
	}
	cases := []struct {
		routes []Route
		want   error
	}{
		{[]Route{{Name: "", Backends: b}}, ErrInvalid},
		{[]Route{{Name: "r"}}, ErrInvalid},
		{[]Route{{Name: "r", Backends: []Backend{{Model: "llama"}}}}, ErrInvalid}, // every weight 0
		{[]Route{{Name: "r", Backends: b, MirrorModel: "x", MirrorPercent: 101}}, ErrInvalid},
		{[]Route{{Name: "r", Backends: b, MirrorVersion: "v1"}}, ErrInvalid},
		{[]Route{{Name: "r", Backends: b, Matches: []Match{{Key: "x", Value: "1", Kind: MatchPresent}}}}, ErrInvalid},
		{[]Route{{Name: "r", Backends: b, Matches: []Match{{Key: "x", Value: "1", Kind: 9}}}}, ErrInvalid},
		{[]Route{{Name: "r", Backends: b, Matches: []Match{{Key: "", Value: "1"}}}}, ErrInvalid},
		{[]Route{{Name: "a\x00b", Backends: b}}, ErrInvalid},
		{[]Route{{Name: "r", Backends: b, Matches: []Match{{Key: "x", Value: "a\x00"}}}}, ErrInvalid},
		{[]Route{{Name: "r", Backends: []Backend{{Model: "llama", Weight: WeightMax + 1}}}}, ErrRange},
		{[]Route{{Name: "r", Backends: b}, {Name: "r", Backends: b}}, ErrExists},
		{[]Route{{Name: "r", Backends: make([]Backend, RouteBackendsMax+1)}}, ErrTooBig},
		{[]Route{{Name: "r", Backends: b, Matches: make([]Match, RouteMatchesMax+1)}}, ErrTooBig},
		{[]Route{{Name: strings.Repeat("x", IDMax+1), Backends: b}}, ErrTooBig},
		{many, ErrTooBig},
	}
	for i, c := range cases {
		if err := r.SetRoutes(c.routes); err != c.want {
			t.Errorf("case %d: %v, want %v", i, err, c.want)
		}
		if res := rpick(t, r, nil); res.Route != 0 || res.Version != "v2" {
			t.Fatalf("case %d: the old table changed", i)
		}
	}
	if err := r.SetRoutes(nil); err != nil { // model routing only
		t.Fatal(err)
	}
	if res := rpick(t, r, &Request{Model: "llama"}); res.Route != -1 {
		t.Fatal(res.Route)
	}
}

func TestRouterPrefillDecode(t *testing.T) {
	pre, dec := poolOf(t, "p", 2), poolOf(t, "d", 2, WithPolicy(PolicyLeastTokens))
	r := newRouter(t)
	addPool(t, r, RouterPoolSpec{Model: "m", Role: RolePrefill}, pre)
	addPool(t, r, RouterPoolSpec{Model: "m", Role: RoleDecode}, dec)
	res, err := r.Pick(&Request{Model: "m", PromptTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsPair() || res.Pool != dec || res.Prefill.Pool != pre || res.Prefill.ID != 0 ||
		!strings.HasPrefix(res.Prefill.ReplicaID, "p") || res.Prefill.HostData != "p/"+res.Prefill.ReplicaID[1:] {
		t.Fatalf("%+v", res)
	}
	if inFlight(t, pre, res.Prefill.ReplicaID) != 1 || inFlight(t, dec, res.ReplicaID) != 1 {
		t.Fatal("in flight")
	}
	if err := r.Complete(res.Ticket, Outcome{}); err != nil {
		t.Fatal(err)
	}
	if inFlight(t, pre, res.Prefill.ReplicaID) != 0 || inFlight(t, dec, res.ReplicaID) != 0 {
		t.Fatal("in flight after Complete")
	}
	res, _ = r.Pick(&Request{Model: "m"})
	if err := r.CompletePair(res.Ticket, Outcome{HTTPStatus: 42}, Outcome{}); err != ErrInvalid {
		t.Fatal(err)
	}
	if err := r.CompletePair(res.Ticket, Outcome{Status: OutcomeConnectError}, Outcome{}); err != nil {
		t.Fatal(err)
	}
	pi, _ := pre.Replica(res.Prefill.ReplicaID)
	di, _ := dec.Replica(res.ReplicaID)
	if pi.Failed != 1 || di.Failed != 0 {
		t.Fatalf("failed %d %d", pi.Failed, di.Failed)
	}
	if err := r.CompletePair(res.Ticket, Outcome{}, Outcome{}); !errors.Is(err, ErrStale) {
		t.Fatal(err)
	}
	setRoutes(t, r, Route{Name: "all", Backends: []Backend{{Model: "m", Weight: 1}}})
	if res := rpick(t, r, nil); !res.IsPair() || res.Pool != dec || res.Route != 0 {
		t.Fatalf("%+v", res)
	}
}

func TestRouterPairNeedsPrefill(t *testing.T) {
	r := newRouter(t)
	addPool(t, r, RouterPoolSpec{Model: "m", Version: "v1", Role: RoleDecode}, poolOf(t, "d", 1))
	addPool(t, r, RouterPoolSpec{Model: "m", Version: "v0", Role: RolePrefill}, poolOf(t, "p", 1))
	if _, err := r.Pick(&Request{Model: "m"}); err != ErrNoModel {
		t.Fatal(err)
	}
	plain := poolOf(t, "x", 1)
	addPool(t, r, RouterPoolSpec{Model: "plain"}, plain)
	res, _ := r.Pick(&Request{Model: "plain"})
	if err := r.CompletePair(res.Ticket, Outcome{}, Outcome{}); err != ErrInvalid {
		t.Fatal(err)
	}
	if err := r.Complete(res.Ticket, Outcome{}); err != nil { // still valid
		t.Fatal(err)
	}
}

func TestRouterSticky(t *testing.T) {
	var now atomic.Uint64
	now.Store(1e12)
	p := poolOf(t, "r", 8, WithPolicy(PolicyRandom), WithSeed(5))
	r := newRouter(t, WithClock(now.Load), WithOption(OptRouterStickyTTLMS, 1000))
	addPool(t, r, RouterPoolSpec{Model: "m"}, p)
	s1 := &Request{Model: "m", Key: []byte("s1")}
	first := rpick(t, r, s1)
	if first.Sticky {
		t.Fatal("first pick sticky")
	}
	for i := 0; i < 20; i++ {
		if res := rpick(t, r, s1); !res.Sticky || res.ReplicaID != first.ReplicaID {
			t.Fatalf("%+v", res)
		}
	}
	now.Add(2e9) // expired
	if rpick(t, r, s1).Sticky {
		t.Fatal("expired session reused")
	}
	if err := r.Pin([]byte("s2"), "m", "", "r7", time.Minute); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if res := rpick(t, r, &Request{Model: "m", Key: []byte("s2")}); !res.Sticky || res.ReplicaID != "r7" {
			t.Fatalf("%+v", res)
		}
	}
	if err := r.Unpin([]byte("s2"), "m", ""); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key         string
		model, repl string
		ttl         time.Duration
		want        error
	}{{"s2", "m", "nope", 0, ErrNotFound}, {"s2", "other", "r1", 0, ErrNoModel}, {"", "m", "r1", 0, ErrInvalid},
		{"s2", "m", "r1", -1, ErrInvalid}, {"s2", "m", "", 0, ErrInvalid},
		{"s2", "m", "r1", 604800001 * time.Millisecond, ErrRange}} {
		if err := r.Pin([]byte(c.key), c.model, "", c.repl, c.ttl); err != c.want {
			t.Errorf("Pin(%+v) = %v", c, err)
		}
	}
	if err := r.SetOption(OptRouterStickyEntries, 0); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.Option(OptRouterStickyEntries); v != 0 {
		t.Fatal(v)
	}
	for i := 0; i < 10; i++ {
		if rpick(t, r, s1).Sticky {
			t.Fatal("sticky with sessions off")
		}
	}
	if err := r.Pin([]byte("s2"), "m", "", "r1", 0); err != ErrInvalid {
		t.Fatal(err)
	}
}

func TestRouterRateLimits(t *testing.T) {
	var now atomic.Uint64
	now.Store(5e12)
	p := poolOf(t, "r", 2)
	r := newRouter(t, WithClock(now.Load))
	addPool(t, r, RouterPoolSpec{Model: "m"}, p)
	perKey := RateLimit{Name: "per-key", KeyAttr: "x-api-key", Rate: 2, Period: time.Second, Burst: 2}
	if err := r.SetRateLimits([]RateLimit{perKey}); err != nil {
		t.Fatal(err)
	}
	k1 := &Request{Model: "m", Attrs: []Attr{{"x-api-key", "k1"}}}
	k2 := &Request{Model: "m", Attrs: []Attr{{"x-api-key", "k2"}}}
	rpick(t, r, k1)
	rpick(t, r, k1)
	res, err := r.Pick(k1)
	if err != ErrRateLimit || res.RetryAfter <= 0 || res.RetryAfter > 500*time.Millisecond {
		t.Fatalf("%v %v", err, res.RetryAfter)
	}
	rpick(t, r, k2)
	rpick(t, r, &Request{Model: "m"}) // no key: not limited
	now.Add(5e8)
	rpick(t, r, k1)
	if _, err := r.Pick(k1); err != ErrRateLimit {
		t.Fatal(err)
	}
	global := RateLimit{Name: "global", Global: true, Rate: 1, Period: time.Minute}
	if err := r.SetRateLimits([]RateLimit{perKey, global}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Pick(k1); err != ErrRateLimit { // per-key kept its buckets
		t.Fatal(err)
	}
	rpick(t, r, k2)
	if res, err := r.Pick(&Request{Model: "m"}); err != ErrRateLimit || res.RetryAfter < 50*time.Second {
		t.Fatalf("%v %v", err, res.RetryAfter)
	}
	if err := r.SetRateLimits([]RateLimit{{Name: "session", Rate: 1}}); err != nil { // the affinity key, 1/s
		t.Fatal(err)
	}
	rpick(t, r, &Request{Model: "m", Key: []byte("a")})
	if _, err := r.Pick(&Request{Model: "m", Key: []byte("a")}); err != ErrRateLimit {
		t.Fatal(err)
	}
	rpick(t, r, &Request{Model: "m", Key: []byte("b")})
	if err := r.SetRateLimits(nil); err != nil {
		t.Fatal(err)
	}
	rpick(t, r, &Request{Model: "m", Key: []byte("a")})
	for _, id := range []string{"r0", "r1"} {
		if inFlight(t, p, id) != 0 {
			t.Fatal("in flight after refused picks")
		}
	}
	many := make([]RateLimit, RateLimitsMax+1)
	for i := range many {
		many[i] = RateLimit{Name: "x" + itoa(int64(i)), Rate: 1}
	}
	for i, c := range []struct {
		limits []RateLimit
		want   error
	}{
		{[]RateLimit{{Name: "x"}}, ErrInvalid},
		{[]RateLimit{{Name: "", Rate: 1}}, ErrInvalid},
		{[]RateLimit{{Name: "x", Rate: 1, Period: 25 * time.Hour}}, ErrInvalid},
		{[]RateLimit{{Name: "x", Rate: 1, Period: -1}}, ErrInvalid},
		{[]RateLimit{{Name: "x", Rate: 1, Burst: 1001}}, ErrInvalid},
		{[]RateLimit{{Name: "x", Rate: 1, Global: true, KeyAttr: "k"}}, ErrInvalid},
		{[]RateLimit{{Name: "x", Rate: 1}, {Name: "x", Rate: 2}}, ErrExists},
		{many, ErrTooBig},
	} {
		if err := r.SetRateLimits(c.limits); err != c.want {
			t.Errorf("case %d: %v, want %v", i, err, c.want)
		}
	}
}

func TestRouterOptions(t *testing.T) {
	r := newRouter(t, WithOption(OptRouterStickyTTLMS, 5000), WithOption(OptRouterRateKeys, 128))
	for id, want := range map[OptionID]int64{OptRouterStickyTTLMS: 5000, OptRouterRateKeys: 128,
		OptRouterStickyBoundPercent: 200, OptRouterPairsMax: 65536} {
		if v, err := r.Option(id); err != nil || v != want {
			t.Errorf("option %d = %d %v", id, v, err)
		}
	}
	if err := r.SetOption(OptRouterStickyTTLMS, 0); err != ErrRange {
		t.Fatal(err)
	}
	if err := r.SetOption(OptScanMax, 4); err != ErrUnknown {
		t.Fatal(err)
	}
	if _, err := r.Option(OptPolicy); err != ErrUnknown {
		t.Fatal(err)
	}
	if _, err := NewRouter(WithOption(OptRouterPairsMax, 1)); err != ErrRange {
		t.Fatal(err)
	}
	for _, o := range []RouterOption{WithPolicy(PolicyP2C), WithEventHandler(func(Event) {})} {
		if _, err := NewRouter(o); !errors.Is(err, ErrInvalid) {
			t.Fatal(err)
		}
	}
	p := newPool(t)
	if err := p.SetOption(OptRouterStickyEntries, 0); err != ErrUnknown {
		t.Fatal(err)
	}
	if _, err := p.Option(OptRouterStickyEntries); err != ErrUnknown {
		t.Fatal(err)
	}
}

func TestRouterAddPoolErrors(t *testing.T) {
	a, b := poolOf(t, "a", 1), poolOf(t, "b", 1)
	r := newRouter(t)
	addPool(t, r, RouterPoolSpec{Model: "m", Labels: map[string]string{"team": "x", "gpu": "a100"}}, a)
	for i, c := range []struct {
		spec RouterPoolSpec
		want error
	}{
		{RouterPoolSpec{Model: "m"}, ErrExists},
		{RouterPoolSpec{Model: ""}, ErrInvalid},
		{RouterPoolSpec{Model: "m", Version: "v2", Role: 7}, ErrInvalid},
		{RouterPoolSpec{Model: "m", Version: "v2", Weight: WeightMax + 1}, ErrRange},
		{RouterPoolSpec{Model: strings.Repeat("m", IDMax+1)}, ErrTooBig},
		{RouterPoolSpec{Model: "m", Version: "v2", Labels: map[string]string{"": "x"}}, ErrInvalid},
		{RouterPoolSpec{Model: "m\x00x"}, ErrInvalid},
		{RouterPoolSpec{Model: "m", Version: "v2", Labels: map[string]string{"k": "a\x00"}}, ErrInvalid},
	} {
		if err := r.AddPool(c.spec, b); err != c.want {
			t.Errorf("case %d: %v, want %v", i, err, c.want)
		}
	}
	if len(*r.pools.Load()) != 1 {
		t.Fatal("a failed AddPool left a record")
	}
	other := newRouter(t)
	if err := other.AddPool(RouterPoolSpec{Model: "m"}, a); err != ErrBusy {
		t.Fatal(err)
	}
	addPool(t, r, RouterPoolSpec{Model: "m", Version: "v2"}, b)
	closed := poolOf(t, "c", 1)
	closed.Close()
	if err := r.AddPool(RouterPoolSpec{Model: "c"}, closed); err != errPoolClosed {
		t.Fatal(err)
	}
	if err := r.AddPool(RouterPoolSpec{Model: "c"}, nil); err != errPoolClosed {
		t.Fatal(err)
	}
}

func TestRouterPoolClosedFirst(t *testing.T) {
	var clockCalls atomic.Int64
	p, err := NewPool(WithClock(func() uint64 { clockCalls.Add(1); return 1e9 }))
	if err != nil {
		t.Fatal(err)
	}
	add(t, p, ReplicaSpec{ID: "r0", HostData: "data"})
	r, err := NewRouter()
	if err != nil {
		t.Fatal(err)
	}
	addPool(t, r, RouterPoolSpec{Model: "m"}, p)
	p.Close() // the host's reference only
	if _, err := p.Pick(Request{}); err != errPoolClosed {
		t.Fatal(err)
	}
	res, err := r.Pick(&Request{Model: "m"})
	if err != nil || res.ReplicaID != "r0" || res.HostData != "data" || res.Pool != p {
		t.Fatalf("%+v %v", res, err)
	}
	if err := r.Complete(res.Ticket, Outcome{}); err != nil {
		t.Fatal(err)
	}
	if _, err := StatsPrometheus(r, nil); err != nil {
		t.Fatal(err)
	}
	if clockCalls.Load() == 0 {
		t.Fatal("the pool's clock was not called")
	}
	if len(p.hs.live) != 1 {
		t.Fatal("handles deleted while the router holds the pool")
	}
	r.Close() // frees the pool and its handles now
	if p.hs.live != nil {
		t.Fatal("handles kept after both closed")
	}
	r.Close()
	if _, err := r.Pick(nil); err != errRouterClosed {
		t.Fatal(err)
	}
	if err := r.Complete(res.Ticket, Outcome{}); err != errRouterClosed {
		t.Fatal(err)
	}
}

func TestRouterClosedFirst(t *testing.T) {
	p := poolOf(t, "r", 1)
	r, _ := NewRouter()
	addPool(t, r, RouterPoolSpec{Model: "m"}, p)
	r.Close()
	if p.hs.live == nil {
		t.Fatal("the pool's handles deleted with the router")
	}
	tk, err := p.Pick(Request{})
	if err != nil || tk.HostData != "r/0" {
		t.Fatal(err)
	}
	p.Complete(tk, Outcome{})
}

// A pick whose replica's handle is gone (removed between the C pick and
// the binding's lookup) is given back and picked again.
func TestRouterPickRacingRemoval(t *testing.T) {
	p := poolOf(t, "r", 2, WithPolicy(PolicyRoundRobin))
	r := newRouter(t)
	addPool(t, r, RouterPoolSpec{Model: "m"}, p)
	forget := func(id string) {
		for h := range p.hs.live {
			if rec := recFrom(uintptr(h)); rec != nil && rec.id == id {
				p.hs.forget(h)
				return
			}
		}
		t.Fatalf("no handle of %s", id)
	}
	forget("r0")
	for i := 0; i < 20; i++ {
		if res := rpick(t, r, &Request{Model: "m"}); res.ReplicaID != "r1" {
			t.Fatal(res.ReplicaID)
		}
	}
	info, _ := p.Replica("r0")
	if info.InFlight != 0 || info.Completed == 0 {
		t.Fatalf("r0: %+v", info)
	}
	forget("r1")
	if _, err := r.Pick(&Request{Model: "m"}); !errors.Is(err, ErrNoReplica) {
		t.Fatal(err)
	}
	if inFlight(t, p, "r1") != 0 {
		t.Fatal("r1 in flight")
	}
}

func TestRouterPoolErrors(t *testing.T) {
	r, v1, v2 := twoVersions(t)
	for _, id := range []string{"a0", "a1"} {
		v1.SetAvailable(id, false)
	}
	for _, id := range []string{"b0", "b1"} {
		v2.SetAvailable(id, false)
	}
	if _, err := r.Pick(&Request{Model: "llama"}); err != ErrNoReplica {
		t.Fatal(err)
	}
	for _, req := range []*Request{{Model: "llama", Priority: 9}, {Model: "llama", Attrs: []Attr{{"x", "a\x00"}}},
		{Model: "llama", Attrs: []Attr{{"model", "llama"}}}, {Model: "l\x00"}, {Zone: "e\x00u"}} {
		if _, err := r.Pick(req); !errors.Is(err, ErrInvalid) {
			t.Errorf("Pick(%+v) = %v", req, err)
		}
	}
}

func TestRouterConcurrent(t *testing.T) {
	r, v1, v2 := twoVersions(t)
	setRoutes(t, r, Route{Name: "ab", Backends: []Backend{{Model: "llama", Version: "v1", Weight: 1},
		{Model: "llama", Version: "v2", Weight: 1}}})
	var wg sync.WaitGroup
	var fails atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			req := &Request{Key: []byte{byte(g), 0}, Attrs: []Attr{{"x-g", itoa(int64(g))}}}
			for i := 0; i < 2000; i++ {
				req.Key[1] = byte(i % 7)
				res, err := r.Pick(req)
				if err != nil || res.Model != "llama" {
					fails.Add(1)
					continue
				}
				if err := r.Complete(res.Ticket, Outcome{}); err != nil {
					fails.Add(1)
				}
			}
		}(g)
	}
	// writers meanwhile
	for i := 0; i < 50; i++ {
		if err := r.SetWeights("ab", []uint32{uint32(i % 5), 1}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if fails.Load() != 0 {
		t.Fatalf("%d failures", fails.Load())
	}
	for _, p := range []*Pool{v1, v2} {
		for _, id := range []string{"a0", "a1", "b0", "b1"} {
			if info, err := p.Replica(id); err == nil && info.InFlight != 0 {
				t.Fatalf("%s in flight %d", id, info.InFlight)
			}
		}
	}
}

// Router picks pass the request as call arguments and take ids, models
// and versions from the binding's records: no Go allocation per pick +
// complete, with or without attributes.
func TestRouterPickAllocs(t *testing.T) {
	r, _, _ := twoVersions(t)
	setRoutes(t, r,
		Route{Name: "canary", Matches: []Match{{Key: "x-canary", Value: "1"}},
			Backends: []Backend{{Model: "llama", Version: "v2", Weight: 1}}},
		Route{Name: "split", Backends: []Backend{{Model: "llama", Version: "v1", Weight: 9},
			{Model: "llama", Version: "v2", Weight: 1}}})
	for _, req := range []*Request{nil, {Model: "llama"}, {Key: []byte("session-1234"), Zone: "eu"},
		{Model: "llama", Attrs: []Attr{{"x-canary", "1"}, {":path", "/v1/chat/completions"}}}} {
		allocs := testing.AllocsPerRun(1000, func() {
			res, _ := r.Pick(req)
			r.Complete(res.Ticket, Outcome{Latency: time.Millisecond})
		})
		if allocs != 0 {
			t.Fatalf("%v allocations per router pick+complete (%+v)", allocs, req)
		}
	}
	p := poolOf(t, "z", 4)
	attrs := []Attr{{"tenant", "t1"}} // as Request.Key: the caller's memory
	allocs := testing.AllocsPerRun(1000, func() {
		tk, _ := p.Pick(Request{Zone: "eu", Attrs: attrs})
		p.Complete(tk, Outcome{})
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per pool pick+complete with a zone and attributes", allocs)
	}
}

func BenchmarkRouterPickComplete(b *testing.B) {
	r, _, _ := twoVersions(b)
	req := &Request{Model: "llama"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := r.Pick(req)
		if err != nil {
			b.Fatal(err)
		}
		r.Complete(res.Ticket, Outcome{})
	}
}
