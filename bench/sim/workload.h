/* Generated workloads for the fleet simulator (issue 7, item 2): request
 * lists in the form the simulator replays (trace.h: arrival, input and
 * output tokens, one id per 512-token prompt block, session), produced
 * from a name, a seed and a size instead of a file.
 *
 * Common rules
 *  - Deterministic: the same (name, seed, n) gives the same trace, bit for
 *    bit, on every platform. The generator is xoshiro256** seeded with
 *    splitmix64; every distribution is an inverse CDF computed in integer
 *    fixed point (log2 and exp2 in Q32 by repeated squaring and square
 *    roots; no floating point, no libm), and every conversion to tokens
 *    or nanoseconds rounds as stated (halves up unless "floor" is said).
 *  - Times: the first request arrives at 0; rates are in requests per
 *    second of trace time. The simulator rescales every time of a trace
 *    (arrivals, hence also bursts and think times) for the offered load,
 *    so only the shape of the arrival process matters, not its rate.
 *  - Blocks: a prompt of L tokens has ceil(L / 512) block ids
 *    (SIM_BLOCK_TOKENS); block i holds tokens [512 i, 512 (i + 1)). Two
 *    prompts carry the same id exactly where they have the same content
 *    in the same position, i.e. the same prefix up to the end of that
 *    block; a block mixing shared and new tokens is new. Ids come from a
 *    per-trace counter tagged with the workload and passed through a
 *    64-bit bijective mixer: unrelated content never collides.
 *  - Requests are sorted by arrival (stable: ties keep generation order,
 *    so a session's turns stay in order). session is 0 except in
 *    multi-turn.
 *  - Sizes: "log-logistic(m, 3/5, cap)" is m * (u / (1 - u))^(3/5) for u
 *    uniform in (0, 1): a lognormal-like bell in log space with fatter
 *    tails (shape 5/3), median m, p90 = m * 9^0.6 = 3.74 m, p99 = m *
 *    99^0.6 = 15.8 m, P(> 32 m) = 0.31%; rounded, then clamped to
 *    [1, cap]. "geometric(m, cap)" is floor(m * log2(1 / u)): P(>= k) =
 *    2^(-k / m), median m, mean 1.44 m, p99 = 6.64 m; clamped to [1, cap].
 *
 * The workloads
 *  - "shared-prefix" (the llm-d / Gateway API Inference Extension
 *    prefix-cache benchmark): 150 groups x 5 prompts (n = 750). A prompt
 *    is its group's system prompt of 6000 tokens followed by its own
 *    question of 1200 tokens (input 7200, 15 blocks), output 1000 tokens.
 *    Blocks 0..10 (tokens 0..5631) are all system prompt: shared by the
 *    group's prompts. Block 11 (tokens 5632..6143) holds the end of the
 *    system prompt and the start of the question: unique to the prompt,
 *    like blocks 12..14. Prompts of different groups share nothing. The
 *    prompts are shuffled (groups interleaved, uniformly random order)
 *    and arrive as a Poisson process at 1 request/s. With n given: the
 *    first n prompts in group order (groups of 5, the last one possibly
 *    smaller), then shuffled. Reuse ceiling (sim_reuse_infinite) of the
 *    default: 150 * 4 * 11 / (750 * 15) = 0.587 whatever the order.
 *  - "heavy-tail": independent prompts, input log-logistic(1000, 3/5,
 *    32000) tokens (median 1000, p99 ~ 15,800, 0.3% at the cap), output
 *    geometric(200, 4096) (median 200, mean ~ 288, p99 ~ 1330); every
 *    block unique (reuse ceiling 0); Poisson arrivals at 1 request/s;
 *    n = 5000 by default.
 *  - "bursty": the sizes of heavy-tail (for the same seed and n, the very
 *    same sizes, in the same order) arriving in on/off bursts: an
 *    interrupted Poisson process whose on periods (exponential, mean
 *    10 s) have arrivals at 10 requests/s and whose off periods
 *    (exponential, mean 90 s) have none: 10x the mean rate for 10% of
 *    the time, 1 request/s overall (in expectation); n = 5000 by default.
 *  - "multi-turn": 500 chat sessions starting as a Poisson process at 0.2
 *    sessions/s (about 1 request/s overall), each of 2..8 turns (uniform).
 *    Turn 1's prompt is a question of log-logistic(500, 3/5, 8000)
 *    tokens; turn k + 1's prompt is turn k's prompt, then turn k's answer
 *    (its output, geometric(200, 4096) tokens), then a new question of
 *    log-logistic(100, 3/5, 2000) tokens. So turn k + 1's blocks begin
 *    with turn k's complete blocks, floor(prompt_k / 512) of them; turn
 *    k's last, partial block and everything after are new ids. A session
 *    stops early rather than exceed a 32,000-token prompt (it still has 2
 *    turns at least). Turn k + 1 arrives an exponential think time (mean
 *    10 s) after turn k's arrival: the generator cannot know when turn k
 *    completes in the simulation, so a slow turn may still be waiting or
 *    running when the next one arrives (whose prefix may then not be
 *    cached yet). The blocks holding the answer are new ids in turn k + 1
 *    (the simulator does not cache output blocks). session = the session
 *    number, 1-based, in order of start. Sessions share nothing with each
 *    other. n = the total number of turns by default; with n given,
 *    sessions are generated until n turns (the last one cut short, so
 *    possibly a single turn).
 *
 * SPDX-License-Identifier: MIT */
#ifndef INFERLB_BENCH_SIM_WORKLOAD_H
#define INFERLB_BENCH_SIM_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "trace.h"

/* Largest n accepted (the simulator indexes requests with 32 bits). */
#define SIM_WORKLOAD_MAX_N UINT32_MAX

/* The workloads' names ("shared-prefix", "heavy-tail", "bursty",
 * "multi-turn"), NULL-terminated, and a one-line description of each, in
 * the same order (for --help), also NULL-terminated. */
extern const char *const sim_workload_names[];
extern const char *const sim_workload_descriptions[];

/* Fills *t (an output: what it held is overwritten, not freed; free it
 * with sim_trace_free) with the workload name of n requests (n = 0: the
 * workload's default size), sorted by arrival, deterministic for (name,
 * seed, n). 0, or -1 with err set ("unknown workload \"NAME\" (known:
 * ...)", "n = N is too large (at most 4294967295)", "out of memory") and
 * *t left empty. err may be NULL (errlen 0); messages are truncated to
 * errlen. */
int sim_workload(sim_trace *t, const char *name, uint64_t seed, size_t n,
                 char *err, size_t errlen);

#endif
