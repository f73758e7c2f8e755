package main

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
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
// ticket to the response body.
//
// A failed attempt is retried on another replica (Pool.Retry: within
// OptRetryMaxAttempts and the retry budget) only when sending it again
// cannot run it twice -- net/http's own rule: its body can be sent again
// (none, or req.GetBody) and either
//
//   - the request never left: the connection could not be made (a dial
//     error, connection refused: outcome REFUSED), whatever the method; or
//   - it is idempotent: GET, HEAD, OPTIONS, TRACE, or it carries an
//     Idempotency-Key or X-Idempotency-Key header.
//
// Any other failure -- a POST whose connection broke or timed out after
// it was written, say -- completes the ticket (CONNECT_ERROR or TIMEOUT;
// CANCELLED when the client went away) and the client gets 502.
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
		if attempt > 0 && hasBody(req) { // replayable: see canResend
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
		unsent := notSent(err)
		switch {
		case req.Context().Err() != nil:
			o.Status = inferlb.OutcomeCancelled // not retried
		case unsent:
			o.Status = inferlb.OutcomeRefused
		case isTimeout(err):
			o.Status = inferlb.OutcomeTimeout
		}
		if o.Status == inferlb.OutcomeCancelled || !canResend(req, unsent) {
			t.pool.Complete(tk, o) // the replica may have run it: never resend
			return nil, err
		}
		d, rerr := t.pool.Retry(&st, tk, o, ireq)
		if rerr != nil {
			// Only a nil error completes tk: after ErrInvalid it is still
			// valid (ErrStale: it was completed already).
			t.pool.Complete(tk, inferlb.Outcome{Status: o.Status})
			return nil, err
		}
		if d.Verdict != inferlb.RetryYes {
			return nil, err // Retry returned nil: tk is completed
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

func hasBody(req *http.Request) bool { return req.Body != nil && req.Body != http.NoBody }

// notSent: the attempt failed before any of the request was written --
// the connection could not be made (net/http returns dial errors as a
// *net.OpError with Op "dial"; ECONNREFUSED arises only there).
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// canResend is net/http's rule for sending a request again: its body can
// be sent again (none, or GetBody), and either nothing of it was sent or
// it is idempotent (GET, HEAD, OPTIONS, TRACE, or an Idempotency-Key /
// X-Idempotency-Key header, whatever its value).
func canResend(req *http.Request, unsent bool) bool {
	if hasBody(req) && req.GetBody == nil {
		return false // spent by the failed attempt
	}
	if unsent {
		return true
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// MinProbeTick is the shortest tick ProbeTick gives: the timer loop never
// calls NextDue more often than this.
const MinProbeTick = 10 * time.Millisecond

// ProbeTick is the tick of Probe for a probe interval: a tenth of it,
// within MinProbeTick..1s (NextDue's own deadline is at most 1 s away
// while ejections, breakers or drains are pending). An interval of 0 or
// under 1 ms (probes off: OptProbeIntervalMS 0) still runs the pool's
// other timers, once a second.
func ProbeTick(interval time.Duration) time.Duration {
	if interval < time.Millisecond {
		return time.Second
	}
	tick := interval / 10
	if tick < MinProbeTick {
		tick = MinProbeTick
	}
	if tick > time.Second {
		tick = time.Second
	}
	return tick
}

// Probe runs the pool's timer until ctx ends: every tick it asks NextDue
// what is due and probes those replicas' health path (GET: 200 passes,
// 503 is "not ready", anything else or no answer in time fails). NextDue's
// deadline is on the library's clock (CLOCK_MONOTONIC), which Go does not
// expose: the tick should be a fraction of OptProbeIntervalMS (ProbeTick).
// A tick under 1 ms is taken as 1 ms.
func (g *Gateway) Probe(ctx context.Context, tick time.Duration, path string) {
	if tick < time.Millisecond {
		tick = time.Millisecond
	}
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
