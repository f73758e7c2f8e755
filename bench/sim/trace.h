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

/* Append one JSONL line (len bytes, no newline needed) to t, which starts
 * zeroed (sim_trace t = {0}). Keys in any order; unknown keys are ignored
 * whatever their value; the four keys above are required, each once;
 * input_length and output_length are integers 0..UINT32_MAX, hash_ids
 * integers 0..UINT64_MAX (the array may be empty); timestamp is any
 * non-negative JSON number of ms (fractions, exponents), converted exactly
 * to ns rounded to the nearest, at most UINT64_MAX ns. JSON whitespace is
 * allowed anywhere JSON allows it, so also a trailing "\r"; anything else
 * after the object is an error. 0, or -1 with err set to what is wrong
 * (no line number: the caller adds it; syntax errors give the byte
 * column), and nothing appended. A blank line (only spaces, tabs, "\r") is
 * 1: skipped. err may be NULL (errlen 0); messages are truncated to
 * errlen. */
int sim_trace_parse_line(sim_trace *t, const char *line, size_t len,
                         char *err, size_t errlen);

/* Load a whole file: every line parsed, blank lines skipped, requests
 * sorted by arrival (stable; O(n log n)). *t is an output: what it held
 * is overwritten, not freed. 0, or -1 with err = "path:line: what" for
 * the first malformed line (1-based; nothing is silently dropped),
 * "path: what" for an I/O error or "path: out of memory". On error *t is
 * left empty. */
int sim_trace_load(sim_trace *t, const char *path, char *err, size_t errlen);

void sim_trace_free(sim_trace *t);

/* Sort the requests by arrival, stably (bottom-up merge sort, O(n log n);
 * O(n) when already in order). 0, or -1 out of memory (order unchanged). */
int sim_trace_sort(sim_trace *t);

/* snprintf into err (errlen bytes; nothing when err is NULL or errlen 0):
 * the error messages of the simulator's pieces. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void sim_set_err(char *err, size_t errlen, const char *fmt, ...);

/* Share of all prompt blocks that a single prefix cache would serve when
 * the requests arrive in order (array order; sim_trace_load sorts): a
 * request's hits are its leading blocks found in the cache before it (a
 * prefix cache reuses only a prefix); then all its blocks are in the
 * cache, the most recently used, touched last to first so that its first
 * block is the most recent of all (the tail of a prefix is evicted before
 * its head, as in vLLM and SGLang). With unlimited size, and with an LRU
 * of capacity_blocks blocks (0: no cache). 0 for a trace without blocks,
 * -1 if out of memory. O(total blocks) expected time (a hash map and an
 * intrusive list: O(1) per block), O(min(capacity, total blocks))
 * memory. */
double sim_reuse_infinite(const sim_trace *t);
double sim_reuse_lru(const sim_trace *t, size_t capacity_blocks);

#endif
