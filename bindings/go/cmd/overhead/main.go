// Command overhead measures one Pick+Complete pair through the Go binding
// (p2c, 8 replicas, no key, one goroutine locked to its thread) and runs
// the C pick_bench for the same case, then prints
//
//	BENCH binding=go ns=<x> c_ns=<y>
//
// The C figure comes from $INFERLB_PICK_BENCH (path of bench/pick_bench in
// a build tree; c_ns=nan when unset). -quick makes both runs short.
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"time"

	"github.com/inferlb/inferlb/bindings/go/inferlb"
)

func main() {
	quick := flag.Bool("quick", false, "short runs (smoke test); noisy numbers")
	reps := flag.Int("reps", 3, "repetitions, median reported")
	flag.Parse()

	runtime.LockOSThread()
	pool, err := inferlb.NewPool(inferlb.WithPolicy(inferlb.PolicyP2C))
	if err != nil {
		fail(err)
	}
	defer pool.Close()
	for i := 0; i < 8; i++ {
		if err := pool.AddReplica(inferlb.ReplicaSpec{ID: fmt.Sprintf("r%d", i)}); err != nil {
			fail(err)
		}
	}
	pair := func() {
		tk, err := pool.Pick(inferlb.Request{})
		if err != nil {
			fail(err)
		}
		if err := pool.Complete(tk, inferlb.Outcome{}); err != nil {
			fail(err)
		}
	}
	target := 150 * time.Millisecond
	if *quick {
		target = 3 * time.Millisecond
	}
	// Pilot run to size the measure.
	n := 1000
	for {
		t0 := time.Now()
		for i := 0; i < n; i++ {
			pair()
		}
		if d := time.Since(t0); d > target/10 || n > 1<<30 {
			n = int(float64(n) * float64(target) / float64(d+1))
			break
		}
		n *= 10
	}
	if n < 1000 {
		n = 1000
	}
	var res []float64
	for r := 0; r < *reps; r++ {
		t0 := time.Now()
		for i := 0; i < n; i++ {
			pair()
		}
		res = append(res, float64(time.Since(t0).Nanoseconds())/float64(n))
	}
	sort.Float64s(res)
	goNs := res[len(res)/2]
	cNs := cBench(*quick, *reps)
	fmt.Printf("BENCH binding=go ns=%.1f c_ns=%.1f\n", goNs, cNs)
	fmt.Printf("# go %s, %d pairs per rep, reps %v ns, library %s\n", runtime.Version(), n, res, inferlb.VersionString())
}

func cBench(quick bool, reps int) float64 {
	path := os.Getenv("INFERLB_PICK_BENCH")
	if path == "" {
		fmt.Fprintln(os.Stderr, "overhead: INFERLB_PICK_BENCH not set; no C figure")
		return math.NaN()
	}
	args := []string{"--policy", "p2c", "--n", "8", "--threads", "1", "--no-build", "--reps", strconv.Itoa(reps)}
	if quick {
		args = append(args, "--quick")
	}
	out, err := exec.Command(path, args...).Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "overhead: %s: %v\n", path, err)
		return math.NaN()
	}
	m := regexp.MustCompile(`(?m)^BENCH policy=p2c n=8 threads=1 ns=([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		fmt.Fprintf(os.Stderr, "overhead: no BENCH line in %q\n", out)
		return math.NaN()
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "overhead:", err)
	os.Exit(1)
}
