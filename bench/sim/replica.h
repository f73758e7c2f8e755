/* The fleet simulator's model of one inference replica: continuous
 * batching with one queue, prefill then one decode token per iteration, a
 * KV cache of 512-token blocks that doubles as an LRU prefix cache, and
 * admission that waits while the KV cache is full. Pure model: no library
 * calls; the simulator drives it with times and reads its state.
 *
 * Iteration semantics (documented so that tests can compute by hand):
 *  - When the engine is idle and has waiting requests, or at the end of
 *    each iteration, it admits waiting requests in arrival order while the
 *    batch has room (max_batch) and the KV cache has the blocks the next
 *    one needs (its prompt blocks not already cached plus its output
 *    blocks); the first that does not fit stops admission (no skipping).
 *  - A request's cached prefix is the leading run of its prompt blocks
 *    found in the cache at admission; only the other prompt tokens are
 *    prefilled (at least one token).
 *  - An iteration lasts (tokens prefilled by the newly admitted requests)
 *    / prefill_tok_s + (if any request was already decoding) step_base_s
 *    + step_per_seq_s * decoding requests. At its end every
 *    newly admitted request has its first token (TTFT) and every request
 *    that was decoding one more token.
 *  - A request with output_tokens = k finishes at the end of the iteration
 *    that gives its k-th token (k = 1: its prefill iteration). Its blocks
 *    are unpinned: prompt blocks stay cached (most recently used), output
 *    blocks are freed. Unpinned cached blocks are evicted least recently
 *    used first when an admission needs room.
 *  - Iterations with no admission and no finish are identical, so the
 *    model jumps over them in one event; an arrival during a jump ends the
 *    jump at the next iteration boundary.
 * SPDX-License-Identifier: MIT */
#ifndef INFERLB_BENCH_SIM_REPLICA_H
#define INFERLB_BENCH_SIM_REPLICA_H

#include <stddef.h>
#include <stdint.h>

/* A GPU profile for an 8B-class model (see replica.c for the sources). */
typedef struct sim_gpu {
  const char *name;
  double prefill_tok_s;  /* prompt tokens per second */
  double step_base_s;    /* decode iteration time of a batch of one */
  double step_per_seq_s; /* added per decoding request */
  uint32_t max_batch;    /* most requests running */
  uint32_t kv_blocks;    /* KV-cache capacity, 512-token blocks */
  uint32_t weight;       /* relative throughput, for the library */
} sim_gpu;

/* The built-in profiles: "h100", "a100", "l4", "t4"; NULL if unknown. */
const sim_gpu *sim_gpu_find(const char *name);
extern const sim_gpu sim_gpus[];
extern const size_t sim_n_gpus;

/* One request as the replica sees it. */
typedef struct sim_job {
  uint64_t id;              /* the simulator's request index */
  uint32_t input_tokens;
  uint32_t output_tokens;
  const uint64_t *blocks;   /* prompt block ids, n_blocks of them */
  uint32_t n_blocks;
  /* filled by the model */
  uint64_t submitted_ns, admitted_ns, first_token_ns, done_ns;
  uint32_t hit_blocks;      /* prompt blocks served from the cache */
  uint32_t produced;        /* tokens so far */
} sim_job;

typedef struct sim_replica sim_replica;

/* A replica with a profile; NULL on out of memory. */
sim_replica *sim_replica_new(const sim_gpu *gpu);
void sim_replica_free(sim_replica *r);

/* A job arrives at time now (the job must outlive its run). A job that
 * could never fit the KV cache (more blocks than it has) is refused: 0,
 * else 1. */
int sim_replica_submit(sim_replica *r, sim_job *job, uint64_t now);

/* Time of the replica's next event (an iteration end), UINT64_MAX when
 * idle. Changes after sim_replica_submit and sim_replica_advance. */
uint64_t sim_replica_next(const sim_replica *r);

/* Run the replica up to and including time now (>= the previous call):
 * every iteration ending at or before now completes. Finished jobs are
 * written to done[] (up to cap; the rest come at the next call with the
 * same now), *n_done their number; returns how many remain to be
 * collected (0 when all were). Jobs that got their first token are
 * visible through their first_token_ns. */
size_t sim_replica_advance(sim_replica *r, uint64_t now, sim_job **done,
                           size_t cap, size_t *n_done);

/* Faults. sim_replica_crash: the process dies at now: every job it holds
 * (waiting or running) is handed back in *lost (a malloc'ed array the
 * caller frees, *n_lost of them), its KV and prefix cache are lost, and it
 * stays idle. The simulator decides when it answers again. Returns 0, or
 * -1 on out of memory (then nothing changed). */
int sim_replica_crash(sim_replica *r, sim_job ***lost, size_t *n_lost);

/* Gray failure: every iteration started after now takes `factor` times
 * longer (1 = normal). A crash resets it (and the /metrics counters). */
void sim_replica_set_slowdown(sim_replica *r, double factor, uint64_t now);

/* KV-cache events, as vLLM publishes them (BlockStored, BlockRemoved,
 * AllBlocksCleared): fn(ud, type, block) for each prompt block that enters
 * the cache (type 1, at admission, in the prompt's order) or is evicted
 * from it (2), type 0 (block 0) after an admission's stored blocks (they
 * form one BlockStored), and once type 3 (block 0) when a crash loses the
 * cache. fn NULL: none. */
void sim_replica_on_kv(sim_replica *r,
                       void (*fn)(void *ud, int type, uint64_t block),
                       void *ud);

/* What its /metrics says. */
typedef struct sim_replica_stats {
  uint32_t waiting, running;
  uint32_t kv_used;        /* blocks pinned by running requests + cached */
  uint32_t kv_pinned;      /* blocks pinned by running requests */
  uint64_t prefix_queries; /* prompt blocks looked up, cumulative */
  uint64_t prefix_hits;    /* of which cached */
  uint64_t gen_tokens;     /* tokens produced, cumulative */
  uint64_t ttft_count;
  double ttft_sum_s;
} sim_replica_stats;

void sim_replica_stats_get(const sim_replica *r, sim_replica_stats *st);

/* Render a vLLM-style /metrics page into buf (cap bytes); returns its
 * length (truncated pages are cut at cap). model: the model_name label. */
size_t sim_replica_metrics(const sim_replica *r, const char *model, char *buf,
                           size_t cap);

#endif
