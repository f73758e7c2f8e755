// Command gateway is an HTTP reverse proxy for inference replicas that lets
// inferlb choose the replica of every request.
//
//	gateway -listen :8080 -policy p2c -upstream a=http://10.0.0.1:8000,b=http://10.0.0.2:8000
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/inferlb/inferlb/bindings/go/inferlb"
)

func main() {
	listen := flag.String("listen", ":8080", "address to serve on")
	policy := flag.String("policy", "p2c", "routing policy (inferlb name)")
	upstreams := flag.String("upstream", "", "comma-separated id=url replicas")
	healthPath := flag.String("health-path", "/health", "replicas' health endpoint")
	probeEvery := flag.Duration("probe-interval", 5*time.Second, "probe interval of a healthy replica (0: no probes)")
	flag.Parse()

	ms := int64(*probeEvery / time.Millisecond) // under 1 ms: 0, probes off
	if ms < 0 {
		log.Fatalf("-probe-interval %v: negative", *probeEvery)
	}
	pool, err := inferlb.NewPool(inferlb.WithPolicy(*policy),
		inferlb.WithOption(inferlb.OptProbeIntervalMS, ms),
		inferlb.WithOption(inferlb.OptProbeUnhealthyIntervalMS, ms/2+1),
		inferlb.WithEventHandler(func(e inferlb.Event) {
			log.Printf("replica %q: event %d (%v) state %d -> %d", e.ReplicaID, e.Type, e.Reason, e.OldState, e.NewState)
		}),
		inferlb.WithLogger(func(level int, msg string) { log.Printf("inferlb[%d]: %s", level, msg) }))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	for _, item := range strings.Split(*upstreams, ",") {
		if item == "" {
			continue
		}
		id, raw, ok := strings.Cut(item, "=")
		if !ok {
			id, raw = item, item
		}
		u, err := url.Parse(raw)
		if err != nil {
			log.Fatalf("upstream %q: %v", item, err)
		}
		if err := pool.AddReplica(inferlb.ReplicaSpec{ID: id, HostData: u}); err != nil {
			log.Fatalf("upstream %q: %v", item, err)
		}
	}
	gw := NewGateway(pool)
	go gw.Probe(context.Background(), ProbeTick(*probeEvery), *healthPath)
	log.Printf("inferlb %s, policy %s, serving on %s", inferlb.VersionString(), *policy, *listen)
	log.Fatal(http.ListenAndServe(*listen, gw))
}
