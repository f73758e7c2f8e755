package main

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/inferlb/inferlb/bindings/go/inferlb"
)

// Gateway is a reverse proxy in front of inference replicas: its transport
// asks inferlb for a replica per request and completes the ticket when the
// response body ends (or fails), so every decision is inferlb's.
type Gateway struct {
	Pool  *inferlb.Pool
	proxy *httputil.ReverseProxy
}

// errNoReplica wraps a failed pick so the error handler answers 503.
type errNoReplica struct {
	err        error
	retryAfter time.Duration
}

func (e *errNoReplica) Error() string { return "no replica: " + e.err.Error() }
func (e *errNoReplica) Unwrap() error { return e.err }

// NewGateway proxies to the replicas of pool; each replica's HostData must
// be its base *url.URL.
func NewGateway(pool *inferlb.Pool) *Gateway {
	g := &Gateway{Pool: pool}
	g.proxy = &httputil.ReverseProxy{
		// The replica is chosen in the transport, where a failure can be
		// returned; the Director only marks the request as outgoing.
		Director: func(r *http.Request) {
			r.URL.Scheme = "http"
			r.URL.Host = "inferlb.invalid"
		},
		Transport:     &transport{pool: pool, base: http.DefaultTransport},
		FlushInterval: -1, // pass SSE / streamed tokens through at once
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var nr *errNoReplica
			if errors.As(err, &nr) {
				if nr.retryAfter > 0 {
					w.Header().Set("Retry-After", strconv.Itoa(int(nr.retryAfter/time.Second)+1))
				}
				http.Error(w, nr.Error(), http.StatusServiceUnavailable)
				return
			}
			if !errors.Is(err, context.Canceled) {
				log.Printf("gateway: upstream: %v", err)
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	return g
}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.proxy.ServeHTTP(w, r) }

type transport struct {
	pool *inferlb.Pool
	base http.RoundTripper
}

// RoundTrip picks a replica (the affinity key is the X-Session-Id header,
// used by the hashing policies), sends the request there, and hands the
// ticket to the response body. When the replica cannot be reached,
// Pool.Retry completes the attempt and may choose another replica (only
// for a request whose body can be sent again).
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var ireq inferlb.Request
	if s := req.Header.Get("X-Session-Id"); s != "" {
		ireq.Key = []byte(s)
	}
	tk, err := t.pool.Pick(ireq)
	if err != nil {
		return nil, &errNoReplica{err: err, retryAfter: tk.RetryAfter}
	}
	var st inferlb.RetryState
	for attempt := 0; ; attempt++ {
		base := tk.HostData.(*url.URL)
		out := *req // RoundTrip must not modify its argument
		u := *req.URL
		u.Scheme, u.Host = base.Scheme, base.Host
		u.Path = singleJoin(base.Path, u.Path)
		out.URL, out.Host = &u, ""
		if attempt > 0 && req.GetBody != nil {
			if out.Body, err = req.GetBody(); err != nil {
				t.pool.Complete(tk, inferlb.Outcome{Status: inferlb.OutcomeCancelled})
				return nil, err
			}
		}
		start := time.Now()
		resp, err := t.base.RoundTrip(&out)
		if err == nil {
			resp.Body = &ticketBody{ReadCloser: resp.Body, pool: t.pool, ticket: tk, start: start, status: resp.StatusCode}
			return resp, nil
		}
		o := inferlb.Outcome{Status: inferlb.OutcomeConnectError, Latency: time.Since(start)}
		switch {
		case req.Context().Err() != nil:
			o.Status = inferlb.OutcomeCancelled // not retried
		case errors.Is(err, syscall.ECONNREFUSED):
			o.Status = inferlb.OutcomeRefused
		}
		if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
			t.pool.Complete(tk, o) // the body is spent: no retry
			return nil, err
		}
		d, rerr := t.pool.Retry(&st, tk, o, ireq)
		if rerr != nil || d.Verdict != inferlb.RetryYes {
			return nil, err // tk is completed
		}
		tk = d.Ticket
		select {
		case <-time.After(d.Backoff):
		case <-req.Context().Done():
			t.pool.Complete(tk, inferlb.Outcome{Status: inferlb.OutcomeCancelled})
			return nil, req.Context().Err()
		}
	}
}

// Probe runs the pool's timer until ctx ends: every tick it asks NextDue
// what is due and probes those replicas' health path (GET: 200 passes,
// 503 is "not ready", anything else or no answer in time fails). NextDue's
// deadline is on the library's clock (CLOCK_MONOTONIC), which Go does not
// expose: the tick should be a fraction of OptProbeIntervalMS.
func (g *Gateway) Probe(ctx context.Context, tick time.Duration, path string) {
	tc := time.NewTicker(tick)
	defer tc.Stop()
	for {
		due, _, err := g.Pool.NextDue(64)
		if err != nil {
			log.Printf("gateway: next due: %v", err)
		}
		for _, d := range due {
			if d.Kind == inferlb.DueProbe {
				go g.probe(ctx, d, path)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tc.C:
		}
	}
}

func (g *Gateway) probe(ctx context.Context, d inferlb.Due, path string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	u := *d.HostData.(*url.URL)
	u.Path = singleJoin(u.Path, path)
	result := inferlb.ProbeFail
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			result = inferlb.ProbePass
		case http.StatusServiceUnavailable: // loading the model: alive
			result = inferlb.ProbeNotReady
		}
	} else if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
		return // shutting down
	}
	g.Pool.HealthReport(d.ReplicaID, result) // ErrNotFound: removed meanwhile
}

func singleJoin(a, b string) string {
	switch {
	case a == "" || a == "/":
		return b
	case b == "":
		return a
	case a[len(a)-1] == '/' && b[0] == '/':
		return a + b[1:]
	case a[len(a)-1] != '/' && b[0] != '/':
		return a + "/" + b
	}
	return a + b
}

// ticketBody completes the ticket once: at EOF (OK, or HTTP_ERROR for 429
// and 5xx), on a read error (CONNECT_ERROR), or at Close before EOF (the
// client went away: CANCELLED). Latency is to the end of the body, so a
// streamed answer counts its whole generation time.
type ticketBody struct {
	io.ReadCloser
	pool   *inferlb.Pool
	ticket inferlb.Ticket
	start  time.Time
	status int
	once   sync.Once
}

func (b *ticketBody) finish(st inferlb.Status) {
	b.once.Do(func() {
		if st == inferlb.OutcomeOK && (b.status == 429 || b.status >= 500) {
			st = inferlb.OutcomeHTTPError
		}
		// ErrRemoved (replica removed meanwhile) releases the ticket too.
		b.pool.Complete(b.ticket, inferlb.Outcome{Status: st, HTTPStatus: b.status, Latency: time.Since(b.start)})
	})
}

func (b *ticketBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.finish(inferlb.OutcomeOK)
	} else if err != nil {
		b.finish(inferlb.OutcomeConnectError)
	}
	return n, err
}

func (b *ticketBody) Close() error {
	err := b.ReadCloser.Close()
	b.finish(inferlb.OutcomeCancelled)
	return err
}
