package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inferlb/inferlb/bindings/go/inferlb"
)

// replayFixture: a "crash" upstream that runs (counts) every request and
// then drops the connection without answering, and an "ok" one that counts
// and answers; round robin over both, behind the gateway.
type replayFixture struct {
	pool         *inferlb.Pool
	gw           *httptest.Server
	crash, okRun atomic.Int64
}

func newReplayFixture(t *testing.T, upstreams ...string) *replayFixture {
	t.Helper()
	f := &replayFixture{}
	crash := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		f.crash.Add(1) // the side effect is done
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	t.Cleanup(crash.Close)
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		f.okRun.Add(1)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(ok.Close)
	pool, err := inferlb.NewPool(inferlb.WithPolicy(inferlb.PolicyRoundRobin))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	urls := map[string]string{"crash": crash.URL, "ok": ok.URL}
	for _, u := range upstreams {
		id, raw, _ := strings.Cut(u, "=")
		urls[id] = raw
	}
	for id, raw := range urls {
		u, _ := url.Parse(raw)
		if err := pool.AddReplica(inferlb.ReplicaSpec{ID: id, HostData: u}); err != nil {
			t.Fatal(err)
		}
	}
	f.pool = pool
	f.gw = httptest.NewServer(NewGateway(pool))
	t.Cleanup(f.gw.Close)
	return f
}

func (f *replayFixture) runs() int64 { return f.crash.Load() + f.okRun.Load() }

func (f *replayFixture) do(t *testing.T, method, body string, hdr map[string]string) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, f.gw.URL+"/v1/jobs/42/cancel", rd)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (f *replayFixture) settled(t *testing.T) inferlb.PoolStatus {
	t.Helper()
	var st inferlb.PoolStatus
	for i := 0; i < 200; i++ { // ticketBody completes as the client reads
		st, _ = f.pool.Health()
		if st.InFlight == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st.InFlight != 0 {
		t.Fatalf("tickets left in flight: %+v", st)
	}
	return st
}

// A POST the upstream received (and ran) before the connection broke is
// not sent again: every client request runs exactly once upstream, and
// the failed attempt's ticket is completed as a failure.
func TestGatewayDoesNotReplayPOST(t *testing.T) {
	f := newReplayFixture(t)
	once := func(i int) int {
		t.Helper()
		body := ""
		if i%2 == 1 {
			body = `{"prompt":"x"}`
		}
		before := f.runs()
		code := f.do(t, http.MethodPost, body, nil)
		if n := f.runs() - before; n != 1 {
			t.Fatalf("request %d ran %d times upstream (crash %d, ok %d)", i, n, f.crash.Load(), f.okRun.Load())
		}
		return code
	}
	// Only "crash" available: a retry would go to it again (the default
	// OptRetryMaxAttempts 2) and run the request twice.
	f.pool.SetAvailable("ok", false)
	for i := 0; i < 4; i++ {
		if code := once(i); code != http.StatusBadGateway {
			t.Fatalf("request %d: %d", i, code)
		}
	}
	// Both: a retry would go to "ok".
	f.pool.SetAvailable("ok", true)
	codes := map[int]int{}
	for i := 0; i < 60 && (i < 8 || f.crash.Load() < 6); i++ {
		codes[once(i)]++
	}
	if codes[http.StatusOK] != int(f.okRun.Load()) || codes[http.StatusBadGateway] != int(f.crash.Load())-4 {
		t.Fatalf("codes %v, crash %d, ok %d", codes, f.crash.Load(), f.okRun.Load())
	}
	st := f.settled(t)
	if st.Retries != 0 {
		t.Fatalf("retried: %+v", st)
	}
	if info, _ := f.pool.Replica("crash"); info.Failed != uint64(f.crash.Load()) || info.InFlight != 0 {
		t.Fatalf("crash replica %+v", info)
	}
}

// Idempotent requests (GET, or a POST with an idempotency key) are sent
// again after such a failure.
func TestGatewayRetriesIdempotent(t *testing.T) {
	f := newReplayFixture(t)
	kinds := []struct {
		method string
		hdr    map[string]string
	}{
		{http.MethodGet, nil},
		{http.MethodPost, map[string]string{"Idempotency-Key": "k"}},
		{http.MethodPost, map[string]string{"X-Idempotency-Key": "k"}},
	}
	// Only "crash": each request runs twice there (one retry), then 502.
	f.pool.SetAvailable("ok", false)
	for _, k := range kinds {
		before := f.crash.Load()
		if code := f.do(t, k.method, "", k.hdr); code != http.StatusBadGateway || f.crash.Load()-before != 2 {
			t.Fatalf("%s %v: %d, ran %d times", k.method, k.hdr, code, f.crash.Load()-before)
		}
	}
	// Both: the retry saves it.
	f.pool.SetAvailable("ok", true)
	for i := 0; i < 60 && (i < 6 || f.crash.Load() < 8); i++ {
		k := kinds[i%3]
		if code := f.do(t, k.method, "", k.hdr); code != http.StatusOK {
			t.Fatalf("%s %v: %d", k.method, k.hdr, code)
		}
	}
	st := f.settled(t)
	if f.crash.Load() < 8 || st.Retries != uint64(f.crash.Load())-3 {
		t.Fatalf("ok %d, crash %d, status %+v", f.okRun.Load(), f.crash.Load(), st)
	}
}

// A connection refused never reached the upstream: any method is sent
// again (a dial error is REFUSED).
func TestGatewayRetriesRefusedPOST(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	f := newReplayFixture(t, "dead="+deadURL)
	f.pool.SetAvailable("crash", false)
	f.pool.SetAvailable("ok", false)
	if code := f.do(t, http.MethodPost, "", nil); code != http.StatusBadGateway {
		t.Fatalf("POST to dead: %d", code)
	}
	if info, _ := f.pool.Replica("dead"); info.Failed != 2 || info.Errors != 2 {
		t.Fatalf("a refused POST is retried: dead %+v", info)
	}
	f.pool.SetAvailable("ok", true)
	for i := 0; i < 6; i++ {
		if code := f.do(t, http.MethodPost, "", nil); code != http.StatusOK {
			t.Fatalf("POST %d: %d", i, code)
		}
	}
	st := f.settled(t)
	info, _ := f.pool.Replica("dead")
	if f.okRun.Load() != 6 || f.crash.Load() != 0 || st.Retries != info.Failed-1 {
		t.Fatalf("ok %d, dead %+v, status %+v", f.okRun.Load(), info, st)
	}
}

func TestProbeTick(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{0, time.Second}, {-time.Second, time.Second}, {500 * time.Microsecond, time.Second},
		{time.Millisecond, MinProbeTick}, {50 * time.Millisecond, MinProbeTick},
		{5 * time.Second, 500 * time.Millisecond}, {time.Hour, time.Second},
	} {
		if got := ProbeTick(c.in); got != c.want {
			t.Errorf("ProbeTick(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
