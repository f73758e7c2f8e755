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
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var key []byte
	if s := req.Header.Get("X-Session-Id"); s != "" {
		key = []byte(s)
	}
	tk, err := t.pool.Pick(inferlb.Request{Key: key})
	if err != nil {
		return nil, &errNoReplica{err: err, retryAfter: tk.RetryAfter}
	}
	base := tk.HostData.(*url.URL)
	out := *req // RoundTrip must not modify its argument
	u := *req.URL
	u.Scheme, u.Host = base.Scheme, base.Host
	u.Path = singleJoin(base.Path, u.Path)
	out.URL, out.Host = &u, ""
	start := time.Now()
	resp, err := t.base.RoundTrip(&out)
	if err != nil {
		st := inferlb.OutcomeConnectError
		if req.Context().Err() != nil {
			st = inferlb.OutcomeCancelled
		}
		t.pool.Complete(tk, inferlb.Outcome{Status: st, Latency: time.Since(start)})
		return nil, err
	}
	resp.Body = &ticketBody{ReadCloser: resp.Body, pool: t.pool, ticket: tk, start: start, status: resp.StatusCode}
	return resp, nil
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
