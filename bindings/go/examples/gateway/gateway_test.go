package main

import (
	"bufio"
	"context"
	"fmt"
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

func TestGateway(t *testing.T) {
	var hitsA, hitsB atomic.Int64
	release := make(chan struct{})
	// A answers /hello and streams SSE on /stream, waiting for the test
	// between its two events.
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hitsA.Add(1)
		if r.URL.Path == "/stream" {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: one\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
			fmt.Fprint(w, "data: two\n\n")
			return
		}
		fmt.Fprint(w, "A")
	}))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hitsB.Add(1)
		fmt.Fprint(w, "B")
	}))
	defer b.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // connections to it are refused

	pool, err := inferlb.NewPool(inferlb.WithPolicy(inferlb.PolicyP2C), inferlb.WithSeed(7))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for id, raw := range map[string]string{"a": a.URL, "b": b.URL} {
		u, _ := url.Parse(raw)
		if err := pool.AddReplica(inferlb.ReplicaSpec{ID: id, HostData: u}); err != nil {
			t.Fatal(err)
		}
	}
	gw := httptest.NewServer(NewGateway(pool))
	defer gw.Close()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(gw.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	inFlight := func(id string) int64 {
		t.Helper()
		info, err := pool.Replica(id)
		if err != nil {
			t.Fatal(err)
		}
		return info.InFlight
	}

	// Requests are spread over both replicas and all completed.
	for i := 0; i < 40; i++ {
		if code, body := get("/hello"); code != 200 || (body != "A" && body != "B") {
			t.Fatalf("GET /hello: %d %q", code, body)
		}
	}
	if hitsA.Load() == 0 || hitsB.Load() == 0 {
		t.Fatalf("not spread: a=%d b=%d", hitsA.Load(), hitsB.Load())
	}
	if inFlight("a") != 0 || inFlight("b") != 0 {
		t.Fatal("tickets left in flight")
	}

	// SSE through the gateway arrives event by event.
	pool.SetAvailable("b", false)
	resp, err := http.Get(gw.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rd := bufio.NewReader(resp.Body)
	line, err := rd.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event %q %v", line, err)
	}
	if d := time.Since(start); d > 2*time.Second { // the upstream holds the rest 5 s
		t.Fatalf("first event buffered: arrived after %v", d)
	}
	if inFlight("a") != 1 { // the stream is still going
		t.Fatalf("in flight during the stream: %d", inFlight("a"))
	}
	close(release) // only now does the upstream send the second event
	rest, _ := io.ReadAll(rd)
	resp.Body.Close()
	if !strings.Contains(string(rest), "data: two") {
		t.Fatalf("rest of the stream %q", rest)
	}
	waitZero := func(id string) {
		for i := 0; i < 200 && inFlight(id) != 0; i++ {
			time.Sleep(5 * time.Millisecond)
		}
		if n := inFlight(id); n != 0 {
			t.Fatalf("%s: %d in flight after the stream", id, n)
		}
	}
	waitZero("a")

	// An upstream that refuses connections: 502, completed as a failure.
	// It is the only available replica, so the one retry (the default
	// OptRetryMaxAttempts 2) goes to it again.
	u, _ := url.Parse(deadURL)
	pool.AddReplica(inferlb.ReplicaSpec{ID: "dead", HostData: u})
	pool.SetAvailable("a", false)
	if code, _ := get("/hello"); code != http.StatusBadGateway {
		t.Fatalf("dead upstream: %d", code)
	}
	if info, _ := pool.Replica("dead"); info.InFlight != 0 || info.Failed != 2 || info.Errors != 2 {
		t.Fatalf("dead replica %+v", info)
	}
	if st, _ := pool.Health(); st.Retries != 1 {
		t.Fatalf("retries %+v", st)
	}

	// No replica available: 503.
	pool.SetAvailable("dead", false)
	if code, _ := get("/hello"); code != http.StatusServiceUnavailable {
		t.Fatalf("no replica: %d", code)
	}
	for _, id := range []string{"a", "b", "dead"} {
		if n := inFlight(id); n != 0 {
			t.Fatalf("%s: %d in flight at the end", id, n)
		}
	}
}

// A refused connection is retried on another replica; the probe loop then
// takes the dead replica and a "loading" one (503 from /health) out of
// picks, and brings the latter back when it is ready.
func TestGatewayProbeAndRetry(t *testing.T) {
	var loading atomic.Bool
	loading.Store(true)
	serve := func(name string, health func() int) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health" {
				w.WriteHeader(health())
				return
			}
			fmt.Fprint(w, name)
		}))
	}
	ok := serve("ok", func() int { return 200 })
	defer ok.Close()
	slow := serve("slow", func() int {
		if loading.Load() {
			return 503
		}
		return 200
	})
	defer slow.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	pool, err := inferlb.NewPool(inferlb.WithPolicy(inferlb.PolicyRoundRobin),
		inferlb.WithOption(inferlb.OptProbeIntervalMS, 20),
		inferlb.WithOption(inferlb.OptProbeUnhealthyIntervalMS, 20),
		inferlb.WithOption(inferlb.OptHealthFall, 1), inferlb.WithOption(inferlb.OptHealthRise, 1),
		inferlb.WithOption(inferlb.OptPanicThresholdPercent, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for id, raw := range map[string]string{"ok": ok.URL, "dead": deadURL} {
		u, _ := url.Parse(raw)
		pool.AddReplica(inferlb.ReplicaSpec{ID: id, HostData: u})
	}
	g := NewGateway(pool)
	gw := httptest.NewServer(g)
	defer gw.Close()
	get := func() string {
		t.Helper()
		resp, err := http.Get(gw.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d %q", resp.StatusCode, body)
		}
		return string(body)
	}
	// No probe yet: "dead" takes every other pick, and the retry saves it.
	for i := 0; i < 6; i++ {
		if body := get(); body != "ok" {
			t.Fatalf("got %q", body)
		}
	}
	st, _ := pool.Health()
	if info, _ := pool.Replica("dead"); st.Retries == 0 || info.Failed != st.Retries || st.InFlight != 0 {
		t.Fatalf("status %+v, dead %+v", st, info)
	}

	u, _ := url.Parse(slow.URL)
	pool.AddReplica(inferlb.ReplicaSpec{ID: "slow", HostData: u})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.Probe(ctx, 2*time.Millisecond, "/health")
	waitHealth := func(id string, want inferlb.Health) {
		t.Helper()
		for i := 0; i < 500; i++ {
			if info, _ := pool.Replica(id); info.Health == want {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		info, _ := pool.Replica(id)
		t.Fatalf("%s: health %v, want %v", id, info.Health, want)
	}
	waitHealth("dead", inferlb.HealthUnhealthy)
	waitHealth("slow", inferlb.HealthStarting)
	before, _ := pool.Health()
	for i := 0; i < 6; i++ {
		if body := get(); body != "ok" {
			t.Fatalf("got %q with dead and slow out", body)
		}
	}
	if after, _ := pool.Health(); after.Retries != before.Retries {
		t.Fatalf("retries %d -> %d: a probed-out replica was picked", before.Retries, after.Retries)
	}
	loading.Store(false)
	waitHealth("slow", inferlb.HealthHealthy)
	seen := map[string]bool{}
	for i := 0; i < 6; i++ {
		seen[get()] = true
	}
	if !seen["slow"] || !seen["ok"] {
		t.Fatalf("after slow became ready: %v", seen)
	}
}
