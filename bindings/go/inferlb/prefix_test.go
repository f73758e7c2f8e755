package inferlb

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

// prefixPool: n replicas "r0".."r<n-1>" under PolicyPrefix with a small
// index (1024 entries, ~80 KiB instead of the default 20 MiB).
func prefixPool(t testing.TB, n int, opts ...PoolOption) *Pool {
	t.Helper()
	all := append([]PoolOption{WithPolicy(PolicyPrefix), WithSeed(7),
		WithOption(OptPrefixTableBlocks, 1024)}, opts...)
	p := newPool(t, all...)
	for i := 0; i < n; i++ {
		add(t, p, ReplicaSpec{ID: "r" + itoa(int64(i)), HostData: i})
	}
	return p
}

func pstats(t testing.TB, p *Pool) PrefixStats {
	t.Helper()
	st, err := p.PrefixStats()
	if err != nil {
		t.Fatalf("PrefixStats: %v", err)
	}
	return st
}

// pickDone picks and completes; it returns the replica.
func pickDone(t testing.TB, p *Pool, req Request) string {
	t.Helper()
	tk, err := p.Pick(req)
	if err != nil {
		t.Fatalf("Pick(%+v): %v", req, err)
	}
	if err := p.Complete(tk, Outcome{}); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	return tk.ReplicaID
}

// chain is the documented prompt hashing: h[0] = XXH64(block 0, seed
// XXH64(model)), h[i] = XXH64(block i, seed h[i-1]); full blocks only.
func chain(model string, text []byte, blockBytes int) []uint64 {
	h := Hash64([]byte(model), 0)
	var out []uint64
	for i := 0; (i+1)*blockBytes <= len(text); i++ {
		h = Hash64(text[i*blockBytes:(i+1)*blockBytes], h)
		out = append(out, h)
	}
	return out
}

func seq(from, n uint64) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = from + uint64(i)
	}
	return out
}

func TestPrefixConstants(t *testing.T) {
	if PolicyPrefix.String() != "prefix" {
		t.Fatalf("PolicyPrefix = %q", PolicyPrefix.String())
	}
	if id, err := PolicyFromName("prefix"); err != nil || id != PolicyPrefix {
		t.Fatalf("PolicyFromName: %v %v", id, err)
	}
	for id := OptPrefixBlockBytes; id <= OptPrefixBoundMin; id++ {
		lo, hi, def, err := OptionBounds(id)
		if err != nil || lo > def || def > hi {
			t.Fatalf("OptionBounds(%d) = %d %d %d %v", id, lo, hi, def, err)
		}
	}
	if lo, hi, def, _ := OptionBounds(OptPrefixMode); lo != PrefixRouted || hi != PrefixEvents || def != PrefixRouted {
		t.Fatalf("OptPrefixMode bounds %d %d %d", lo, hi, def)
	}
	if _, hi, _, _ := OptionBounds(OptPrefixMaxBlocks); hi != 256 {
		t.Fatalf("OptPrefixMaxBlocks max %d", hi)
	}
	p := prefixPool(t, 1, WithOption(OptPrefixMode, PrefixEvents), WithOption(OptPrefixBlockBytes, 64))
	if v, err := p.Option(OptPrefixMode); err != nil || v != PrefixEvents {
		t.Fatalf("OptPrefixMode = %d %v", v, err)
	}
	if err := p.SetOption(OptPrefixBlockBytes, 15); !errors.Is(err, ErrRange) {
		t.Fatalf("block bytes 15: %v", err)
	}
}

func TestPrefixSticksToHolder(t *testing.T) {
	p := prefixPool(t, 4)
	prefix := seq(1000, 16) // 16 shared blocks
	holder := pickDone(t, p, Request{BlockHashes: append(append([]uint64{}, prefix...), 1)})
	if st := pstats(t, p); st.Lookups != 1 || st.Blocks != 17 || st.MatchedBlocks != 0 || st.Entries != 17 {
		t.Fatalf("after the first pick: %+v", st)
	}
	for i := uint64(2); i < 22; i++ { // same prefix, a new last block
		tk, err := p.Pick(Request{BlockHashes: append(append([]uint64{}, prefix...), i)})
		if err != nil || tk.ReplicaID != holder || tk.HostData.(int) != int(holder[1]-'0') {
			t.Fatalf("pick %d: %+v %v (holder %s)", i, tk, err, holder)
		}
		p.Complete(tk, Outcome{})
	}
	st := pstats(t, p)
	if st.Lookups != 21 || st.Blocks != 17*21 || st.MatchedBlocks != 16*20 {
		t.Fatalf("stats %+v", st)
	}
	if r := st.HitRate(); r <= 0.8 || r >= 1 {
		t.Fatalf("hit rate %v", r)
	}
}

func TestPrefixSpreads(t *testing.T) {
	// Unrelated prompts held open: each goes to the least loaded.
	p := prefixPool(t, 4)
	var tks []Ticket
	seen := map[string]bool{}
	for i := uint64(1); i <= 8; i++ {
		tk, err := p.Pick(Request{BlockHashes: []uint64{i * 100, i*100 + 1}})
		if err != nil {
			t.Fatal(err)
		}
		seen[tk.ReplicaID] = true
		tks = append(tks, tk)
	}
	if len(seen) != 4 || pstats(t, p).MatchedBlocks != 0 {
		t.Fatalf("replicas %v, %+v", seen, pstats(t, p))
	}
	for _, tk := range tks {
		p.Complete(tk, Outcome{})
	}
	// One hot prefix held open is bounded, not piled on its holder.
	p = prefixPool(t, 4, WithOption(OptPrefixBoundMin, 1))
	tks, seen = nil, map[string]bool{}
	for i := 0; i < 16; i++ {
		tk, err := p.Pick(Request{BlockHashes: []uint64{5, 6, 7}})
		if err != nil {
			t.Fatal(err)
		}
		seen[tk.ReplicaID] = true
		tks = append(tks, tk)
	}
	if len(seen) < 2 {
		t.Fatalf("hot prefix on %v only", seen)
	}
	for _, tk := range tks {
		p.Complete(tk, Outcome{})
	}
	if s := status(t, p); s.InFlight != 0 {
		t.Fatalf("in flight %d", s.InFlight)
	}
}

func TestPrefixPromptAndModel(t *testing.T) {
	p := prefixPool(t, 4)
	text := []byte(strings.Repeat("\x00\x01abc", 160)) // 800 bytes: 3 blocks of 256
	holder := pickDone(t, p, Request{Prompt: text, Model: "llama-3"})
	if st := pstats(t, p); st.Lookups != 1 || st.Blocks != 3 {
		t.Fatalf("stats %+v", st)
	}
	// The host's own hashes of the same prompt find the same blocks.
	if got := pickDone(t, p, Request{BlockHashes: chain("llama-3", text, 256)}); got != holder {
		t.Fatalf("chain went to %s, prompt to %s", got, holder)
	}
	if got := pickDone(t, p, Request{Prompt: text, Model: "llama-3", Key: []byte("k")}); got != holder {
		t.Fatalf("prompt again went to %s, not %s", got, holder)
	}
	if st := pstats(t, p); st.MatchedBlocks != 6 {
		t.Fatalf("stats %+v", st)
	}
	// Another model (or none: "") is another chain: nothing matches.
	pickDone(t, p, Request{Prompt: text, Model: "other"})
	pickDone(t, p, Request{Prompt: text})
	pickDone(t, p, Request{BlockHashes: chain("", text, 256)}) // = no model
	if st := pstats(t, p); st.MatchedBlocks != 9 || st.Lookups != 6 {
		t.Fatalf("stats %+v", st)
	}
	// A model name longer than the shim's stack buffer.
	long := strings.Repeat("m", 1000)
	h := pickDone(t, p, Request{Prompt: text, Model: long})
	if got := pickDone(t, p, Request{BlockHashes: chain(long, text, 256)}); got != h {
		t.Fatalf("long model: %s vs %s", got, h)
	}
	// Short prompts and requests without blocks look nothing up.
	before := pstats(t, p).Lookups
	pickDone(t, p, Request{Prompt: []byte("short"), Model: "m"})
	pickDone(t, p, Request{BlockHashes: []uint64{}})
	pickDone(t, p, Request{})
	if st := pstats(t, p); st.Lookups != before {
		t.Fatalf("lookups %d, want %d", st.Lookups, before)
	}
	// At most OptPrefixMaxBlocks blocks count.
	if err := p.SetOption(OptPrefixMaxBlocks, 8); err != nil {
		t.Fatal(err)
	}
	before = pstats(t, p).Blocks
	pickDone(t, p, Request{BlockHashes: seq(1, 300)})
	if st := pstats(t, p); st.Blocks != before+8 {
		t.Fatalf("blocks %d, want %d", st.Blocks, before+8)
	}
}

func TestPrefixIgnoredByOtherPolicies(t *testing.T) {
	p := newPool(t, WithPolicy(PolicyLeastConn))
	add(t, p, ReplicaSpec{ID: "a"})
	pickDone(t, p, Request{BlockHashes: []uint64{1, 2}, Prompt: make([]byte, 600), Model: "m"})
}

func TestPrefixRetryCarriesBlocks(t *testing.T) {
	p := prefixPool(t, 4)
	req := Request{BlockHashes: []uint64{11, 12, 13}}
	pickDone(t, p, req)
	tk, err := p.Pick(req)
	if err != nil {
		t.Fatal(err)
	}
	if st := pstats(t, p); st.MatchedBlocks != 3 {
		t.Fatalf("stats %+v", st)
	}
	d, err := p.Retry(NewRetryState(), tk, Outcome{Status: OutcomeRefused}, req)
	if err != nil || d.Verdict != RetryYes || d.Ticket.ReplicaID == tk.ReplicaID {
		t.Fatalf("retry %+v %v", d, err)
	}
	if st := pstats(t, p); st.Lookups != 3 || st.Blocks != 9 {
		t.Fatalf("the retry's pick did not carry the blocks: %+v", st)
	}
	p.Complete(d.Ticket, Outcome{})
}

func TestPrefixKVEvents(t *testing.T) {
	p := prefixPool(t, 4, WithOption(OptPrefixMode, PrefixEvents))
	blocks := []uint64{21, 22, 23, 24}
	pickDone(t, p, Request{BlockHashes: blocks}) // events mode: picks learn nothing
	if st := pstats(t, p); st.Entries != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := p.KVEvent("r2", KVEvent{Type: KVStored, BlockHashes: blocks, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if got := pickDone(t, p, Request{BlockHashes: append(append([]uint64{}, blocks...), 99)}); got != "r2" {
			t.Fatalf("pick went to %s, not the holder r2", got)
		}
	}
	if st := pstats(t, p); st.Events != 1 || st.Entries != 4 || st.MatchedBlocks != 20 {
		t.Fatalf("stats %+v", st)
	}
	// Evicting the tail leaves the head held.
	if err := p.KVEvent("r2", KVEvent{Type: KVRemoved, BlockHashes: blocks[2:], Seq: 2}); err != nil {
		t.Fatal(err)
	}
	before := pstats(t, p).MatchedBlocks
	if got := pickDone(t, p, Request{BlockHashes: blocks}); got != "r2" {
		t.Fatalf("went to %s", got)
	}
	if st := pstats(t, p); st.MatchedBlocks != before+2 {
		t.Fatalf("stats %+v", st)
	}
	if err := p.KVEvent("r2", KVEvent{Type: KVCleared, Seq: 3}); err != nil {
		t.Fatal(err)
	}
	if st := pstats(t, p); st.Events != 3 || st.Entries != 0 {
		t.Fatalf("stats %+v", st)
	}
	// More blocks than one pick's buffer.
	if err := p.KVEvent("r3", KVEvent{Type: KVStored, BlockHashes: seq(1000, 290)}); err != nil {
		t.Fatal(err)
	}
	if st := pstats(t, p); st.Entries != 290 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPrefixKVEventStaleAndRestart(t *testing.T) {
	p := prefixPool(t, 2, WithOption(OptPrefixMode, PrefixEvents))
	must := func(ev KVEvent) {
		t.Helper()
		if err := p.KVEvent("r1", ev); err != nil {
			t.Fatalf("%+v: %v", ev, err)
		}
	}
	must(KVEvent{Type: KVStored, BlockHashes: []uint64{1, 2}, Seq: 10})
	must(KVEvent{Type: KVStored, BlockHashes: []uint64{3}, Seq: 10}) // same batch
	err := p.KVEvent("r1", KVEvent{Type: KVStored, BlockHashes: []uint64{4}, Seq: 9})
	var e *Error
	if !errors.Is(err, ErrStale) || !errors.As(err, &e) || e.Code != ESTALE {
		t.Fatalf("stale event: %v", err)
	}
	if st := pstats(t, p); st.Events != 2 || st.StaleEvents != 1 || st.Entries != 3 {
		t.Fatalf("stats %+v", st)
	}
	must(KVEvent{Type: KVStored, BlockHashes: []uint64{5}}) // seq 0: always applied
	must(KVEvent{Type: KVStored, BlockHashes: []uint64{6}, Seq: 1, Restart: true})
	if st := pstats(t, p); st.Events != 4 || st.StaleEvents != 1 || st.Entries != 1 {
		t.Fatalf("after restart: %+v", st)
	}
	must(KVEvent{Type: KVRemoved, BlockHashes: []uint64{6}, Seq: 2})
	if st := pstats(t, p); st.Entries != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := p.KVEvent("r0", KVEvent{Type: KVStored, BlockHashes: []uint64{7}, Seq: 1}); err != nil {
		t.Fatalf("r0 has its own sequence: %v", err)
	}
}

func TestPrefixErrors(t *testing.T) {
	p := prefixPool(t, 1)
	for _, c := range []struct {
		id  string
		ev  KVEvent
		err error
	}{
		{"nope", KVEvent{Type: KVStored, BlockHashes: []uint64{1}}, ErrNotFound},
		{"r0", KVEvent{Type: 0}, ErrInvalid},
		{"r0", KVEvent{Type: 4, BlockHashes: []uint64{1}}, ErrInvalid},
		{"r0", KVEvent{Type: -1}, ErrInvalid},
	} {
		if err := p.KVEvent(c.id, c.ev); !errors.Is(err, c.err) {
			t.Errorf("KVEvent(%q, %+v) = %v, want %v", c.id, c.ev, err, c.err)
		}
	}
	// A NUL in Model: C would read the model only up to it.
	if _, err := p.Pick(Request{Prompt: make([]byte, 512), Model: "a\x00b"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("model with NUL: %v", err)
	}
	tk, err := p.Pick(Request{})
	if err != nil {
		t.Fatal(err)
	}
	st := NewRetryState()
	if _, err := p.Retry(st, tk, Outcome{Status: OutcomeRefused}, Request{Model: "\x00"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("retry, model with NUL: %v", err)
	}
	if i := info(t, p, "r0"); i.InFlight != 1 || st.Attempts() != 1 {
		t.Fatalf("the ticket was used: %+v", i)
	}
	p.Complete(tk, Outcome{})
	if s := pstats(t, p); s.Events != 0 || s.Entries != 0 || s.Lookups != 0 {
		t.Fatalf("stats %+v", s)
	}

	// A pool whose policy is not prefix has no index.
	q := newPool(t, WithPolicy(PolicyP2C))
	add(t, q, ReplicaSpec{ID: "a"})
	_, err = q.PrefixStats()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no prefix index") {
		t.Fatalf("PrefixStats on p2c: %v", err)
	}
	err = q.KVEvent("a", KVEvent{Type: KVStored, BlockHashes: []uint64{1}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no prefix index") {
		t.Fatalf("KVEvent on p2c: %v", err)
	}
	if err := q.KVEvent("b", KVEvent{Type: KVStored}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("KVEvent, no such replica: %v", err) // the id is checked first
	}
	// Switching to prefix builds the index; switching away drops it.
	if err := q.SetOption(OptPrefixTableBlocks, 1024); err != nil {
		t.Fatal(err)
	}
	if err := q.SetOption(OptPolicy, int64(PolicyPrefix)); err != nil {
		t.Fatal(err)
	}
	if err := q.KVEvent("a", KVEvent{Type: KVStored, BlockHashes: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	if s := pstats(t, q); s.Entries != 1 {
		t.Fatalf("stats %+v", s)
	}
	q.SetOption(OptPolicy, int64(PolicyP2C))
	if _, err := q.PrefixStats(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("after switching away: %v", err)
	}

	// A closed pool.
	p.Close()
	if _, err := p.PrefixStats(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("closed: %v", err)
	}
	if err := p.KVEvent("r0", KVEvent{Type: KVCleared}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("closed: %v", err)
	}
}

func TestPrefixStatsFields(t *testing.T) {
	p := prefixPool(t, 2)
	st := pstats(t, p)
	// 1024 entries: 147 buckets of 7, rounded up to 256, of 320 bytes.
	if st.Capacity != 256*7 || st.MemoryBytes < 256*320 || st.MemoryBytes >= 256*320+4096 {
		t.Fatalf("stats %+v", st)
	}
	if (st != PrefixStats{Capacity: st.Capacity, MemoryBytes: st.MemoryBytes}) || st.HitRate() != 0 {
		t.Fatalf("fresh index: %+v", st)
	}
	pickDone(t, p, Request{BlockHashes: []uint64{1, 2, 3}})
	if st = pstats(t, p); st.Entries != 3 || st.Lookups != 1 || st.Blocks != 3 || st.Recorded != 3 {
		t.Fatalf("stats %+v", st)
	}
	// Changing the table size empties the index and its counters.
	if err := p.SetOption(OptPrefixTableBlocks, 2048); err != nil {
		t.Fatal(err)
	}
	if st = pstats(t, p); st.Entries != 0 || st.Lookups != 0 || st.Capacity != 512*7 {
		t.Fatalf("stats %+v", st)
	}
}

// From an event callback (the pool's lock held) both prefix calls are
// writers: ErrDeadlock, not a deadlock.
func TestPrefixFromCallback(t *testing.T) {
	var p *Pool
	var statsErr, evErr error
	p = newPool(t, WithPolicy(PolicyPrefix), WithOption(OptPrefixTableBlocks, 1024),
		WithEventHandler(func(e Event) {
			if e.Type == EventReplicaAdded && e.ReplicaID == "b" {
				_, statsErr = p.PrefixStats()
				evErr = p.KVEvent("a", KVEvent{Type: KVCleared})
			}
		}))
	add(t, p, ReplicaSpec{ID: "a"})
	add(t, p, ReplicaSpec{ID: "b"})
	if !errors.Is(statsErr, ErrDeadlock) || !errors.Is(evErr, ErrDeadlock) {
		t.Fatalf("from a callback: %v, %v", statsErr, evErr)
	}
}

// Picks with blocks, KV events and stats from many goroutines (go test
// -race), with replicas coming and going.
func TestPrefixConcurrent(t *testing.T) {
	p := prefixPool(t, 4)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			text := []byte(strings.Repeat("conversation ", 100))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req := Request{BlockHashes: []uint64{1, 2, 3, uint64(g*1000 + i%50)}}
				if i%2 == 1 {
					req = Request{Prompt: text[:256+i%500], Model: "m"}
				}
				tk, err := p.Pick(req)
				if err != nil {
					t.Errorf("pick: %v", err)
					return
				}
				if err := p.Complete(tk, Outcome{}); err != nil && !errors.Is(err, ErrRemoved) {
					t.Errorf("complete: %v", err)
					return
				}
			}
		}(g)
	}
	for i := 0; i < 200; i++ {
		id := "churn" + itoa(int64(i))
		add(t, p, ReplicaSpec{ID: id})
		if err := p.KVEvent(id, KVEvent{Type: KVStored, BlockHashes: []uint64{1, 2, 3}, Seq: uint64(i + 1)}); err != nil {
			t.Error(err)
		}
		if err := p.KVEvent("r0", KVEvent{Type: KVStored, BlockHashes: seq(uint64(i), 8)}); err != nil {
			t.Error(err)
		}
		pstats(t, p)
		if err := p.RemoveReplica(id); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	for i := 0; i < 4; i++ {
		if in := info(t, p, "r"+itoa(int64(i))); in.InFlight != 0 {
			t.Fatalf("r%d in flight %d", i, in.InFlight)
		}
	}
}

// Prefix picks pass the slices and the model as call arguments: no Go
// allocation per pick + complete either.
func TestPrefixPickAllocs(t *testing.T) {
	p := prefixPool(t, 8)
	blocks := seq(1, 64)
	text := make([]byte, 4096)
	for _, req := range []Request{{BlockHashes: blocks}, {Prompt: text, Model: "llama-3"},
		{Prompt: text, Model: strings.Repeat("m", 300)}} {
		allocs := testing.AllocsPerRun(1000, func() {
			tk, _ := p.Pick(req)
			p.Complete(tk, Outcome{})
		})
		if allocs != 0 {
			t.Fatalf("%v allocations per prefix pick+complete (%d blocks, %d prompt bytes)",
				allocs, len(req.BlockHashes), len(req.Prompt))
		}
	}
}
