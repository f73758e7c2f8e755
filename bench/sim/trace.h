/* Request traces for the fleet simulator: Mooncake-format JSONL (FAST'25
 * release: {"timestamp": ms, "input_length": tokens, "output_length":
 * tokens, "hash_ids": [one id per 512-token prompt block]}) and the cache
 * reuse ceilings of a trace.
 * SPDX-License-Identifier: MIT */
#ifndef INFERLB_BENCH_SIM_TRACE_H
#define INFERLB_BENCH_SIM_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define SIM_BLOCK_TOKENS 512 /* tokens per hash_ids entry (Mooncake) */

typedef struct sim_req {
  uint64_t arrival_ns;    /* timestamp (ms) * 1e6, as in the file */
  uint32_t input_tokens;  /* input_length */
  uint32_t output_tokens; /* output_length */
  uint32_t n_blocks;      /* number of hash_ids */
  uint32_t session;       /* 0 = none (traces); generated workloads: id */
  size_t blocks_off;      /* its hash_ids: trace->blocks[blocks_off ..] */
} sim_req;

typedef struct sim_trace {
  sim_req *req; /* sorted by arrival (stable) */
  size_t n, cap;
  uint64_t *blocks;
  size_t n_blocks, cap_blocks;
} sim_trace;

/* Append one JSONL line (len bytes, no newline needed). Keys in any order;
 * unknown keys are ignored; the four keys above are required; numbers are
 * non-negative integers (timestamp may be fractional ms); hash_ids may be
 * empty. 0, or -1 with err set to what is wrong (no line number: the
 * caller adds it). A blank line (only spaces) is 1: skipped. */
int sim_trace_parse_line(sim_trace *t, const char *line, size_t len,
                         char *err, size_t errlen);

/* Load a whole file: every line parsed, blank lines skipped, requests
 * sorted by arrival (stable). 0, or -1 with err = "path:line: what" for
 * the first malformed line (nothing is silently dropped) or the I/O
 * error. On error *t is left empty. */
int sim_trace_load(sim_trace *t, const char *path, char *err, size_t errlen);

void sim_trace_free(sim_trace *t);

/* Share of all prompt blocks that a single prefix cache would serve when
 * the requests arrive in order: a request's hits are its leading blocks
 * found in the cache (a prefix cache reuses only a prefix); then all its
 * blocks are in the cache, the most recently used. With unlimited size,
 * and with an LRU of capacity_blocks blocks. 0 for a trace without
 * blocks. */
double sim_reuse_infinite(const sim_trace *t);
double sim_reuse_lru(const sim_trace *t, size_t capacity_blocks);

#endif
