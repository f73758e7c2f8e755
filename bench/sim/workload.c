/* Generated workloads for the fleet simulator (see workload.h).
 *
 * Everything is integer arithmetic, so a trace is the same bits on every
 * platform: the generator (splitmix64 seeding xoshiro256**), bounded
 * draws (rejection, unbiased), log2 in Q32 fixed point (repeated squaring
 * of the mantissa), 2^x in Q31 (a product of 2^(2^-i) factors, each from
 * integer square roots), 64 x 64 -> 128-bit products from 32-bit halves.
 * Each distribution is an inverse CDF on top of these:
 *   exponential(mean) = mean * ln 2 * log2(1 / u),
 *   geometric(m)      = floor(m * log2(1 / u)),
 *   log-logistic      = m * 2^((3/5) * (log2 u - log2(1 - u))).
 * Precision: log2 to about 2^-30, 2^x better than 2^-26 relative; far below
 * a token or a nanosecond at these magnitudes, and in any case fixed.
 *
 * Independent streams (one generator each, seeded from (seed, stream))
 * keep the pieces of a workload apart: heavy-tail and bursty draw their
 * sizes from the same stream, so they differ only in arrival times.
 *
 * Cost: O(n + total blocks) time and memory, plus an O(n log n) stable
 * merge sort for multi-turn (the others are generated in order).
 * SPDX-License-Identifier: MIT */
#include "workload.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const sim_workload_names[] = {"shared-prefix", "heavy-tail",
                                          "bursty", "multi-turn", NULL};

const char *const sim_workload_descriptions[] = {
    "150 groups x 5 prompts: a 6000-token system prompt shared in the "
    "group + a 1200-token question, 1000 out; shuffled, Poisson 1 req/s",
    "5000 independent prompts: input log-logistic median 1000 (p99 ~16k, "
    "cap 32k), output geometric median 200 (cap 4096); Poisson 1 req/s",
    "heavy-tail's sizes in on/off bursts: 10 req/s for 10% of the time "
    "(on mean 10 s, off mean 90 s), none otherwise; 5000 requests",
    "500 chat sessions of 2..8 turns, each prompt = the previous one + its "
    "answer + a new question; think time mean 10 s; 0.2 sessions/s",
    NULL};

#define NS_PER_S UINT64_C(1000000000)
#define M32 UINT64_C(0xffffffff)
#define Q32_ONE (UINT64_C(1) << 32)

/* ------------------------------------------------------------------------ */
/* Errors and growth                                                         */
/* ------------------------------------------------------------------------ */


/* Room for `more` entries of `elem` bytes after *n: doubling, checked. */
static int reserve(void **p, size_t *cap, size_t n, size_t more,
                   size_t elem) {
  if (more > SIZE_MAX - n)
    return -1;
  size_t need = n + more;
  if (need <= *cap)
    return 0;
  size_t ncap = *cap ? *cap : 64;
  while (ncap < need) {
    if (ncap > SIZE_MAX / 2)
      return -1;
    ncap *= 2;
  }
  if (ncap > SIZE_MAX / elem)
    return -1;
  void *np = realloc(*p, ncap * elem);
  if (np == NULL)
    return -1;
  *p = np;
  *cap = ncap;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Generator                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct rng {
  uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* The streams of a workload. */
enum {
  ST_SIZES = 1,    /* heavy-tail and bursty sizes */
  ST_ARRIVALS = 2, /* Poisson gaps; multi-turn session starts */
  ST_ORDER = 3,    /* shared-prefix shuffle */
  ST_PHASES = 4,   /* bursty on/off periods */
  ST_TURNS = 5,    /* multi-turn turn counts and sizes */
  ST_THINK = 6,    /* multi-turn think times */
};

static void rng_init(rng *r, uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ (stream * UINT64_C(0xd1b54a32d192ed03));
  for (int i = 0; i < 4; i++)
    r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng *r) { /* xoshiro256** */
  uint64_t *s = r->s;
  uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return out;
}

/* Uniform in [0, bound), bound >= 1, unbiased (rejection). */
static uint64_t rng_below(rng *r, uint64_t bound) {
  uint64_t threshold = (0 - bound) % bound; /* 2^64 mod bound */
  for (;;) {
    uint64_t x = rng_next(r);
    if (x >= threshold)
      return x % bound;
  }
}

/* ------------------------------------------------------------------------ */
/* Fixed-point math                                                          */
/* ------------------------------------------------------------------------ */

/* round(a * b / 2^32), halves up; the caller keeps the result < 2^64. */
static uint64_t mul_q32(uint64_t a, uint64_t b) {
  uint64_t a0 = a & M32, a1 = a >> 32, b0 = b & M32, b1 = b >> 32;
  uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  uint64_t mid = (p00 >> 32) + (p01 & M32) + (p10 & M32);
  uint64_t lo = (mid << 32) | (p00 & M32);
  uint64_t hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
  uint64_t lo2 = lo + (UINT64_C(1) << 31);
  if (lo2 < lo)
    hi++;
  return (hi << 32) | (lo2 >> 32);
}

/* log2(x) for x >= 1 in Q32 (integer part in the high 32 bits). The
 * mantissa is cut (floor) to 32 significant bits, in [1, 2) as Q31; each
 * squaring (rounded, halves up) yields one bit of the fraction: it is 1
 * when the square reaches 2, which is then halved (floor). */
static uint64_t log2_q32(uint64_t x) {
  unsigned e = 63;
  while ((x >> e) == 0)
    e--;
  uint64_t m = e >= 31 ? x >> (e - 31) : x << (31 - e);
  uint64_t r = (uint64_t)e << 32;
  for (int i = 31; i >= 0; i--) {
    m = (m * m + (UINT64_C(1) << 30)) >> 31;
    if (m >= Q32_ONE) {
      m >>= 1;
      r |= UINT64_C(1) << i;
    }
  }
  return r;
}

/* floor(sqrt(x)), rounded to the nearest (x > r^2 + r means sqrt(x) >
 * r + 1/2, x integer). */
static uint64_t isqrt_round(uint64_t x) {
  uint64_t r = 0, bit = UINT64_C(1) << 62, v = x;
  while (bit > v)
    bit >>= 2;
  while (bit != 0) {
    if (v >= r + bit) {
      v -= r + bit;
      r = (r >> 1) + bit;
    } else {
      r >>= 1;
    }
    bit >>= 2;
  }
  return v > r ? r + 1 : r; /* v = x - r^2 here */
}

/* 2^(2^-i) in Q31 for i = 0..32 (pow2_tab[0] = 2.0), each the rounded
 * square root of the one before. */
typedef struct pow2_tab {
  uint64_t t[33];
} pow2_tab;

static void pow2_tab_init(pow2_tab *p) {
  p->t[0] = UINT64_C(1) << 32;
  for (int i = 1; i <= 32; i++)
    p->t[i] = isqrt_round(p->t[i - 1] << 31);
}

/* 2^f for f in [0, 1) as Q32, result in Q31 (in [2^31, 2^32]): the
 * product of 2^(2^-i) over the set bits, each step rounded halves up. */
static uint64_t exp2_frac_q31(const pow2_tab *p, uint64_t f) {
  uint64_t v = UINT64_C(1) << 31;
  for (int i = 1; i <= 32; i++)
    if ((f >> (32 - i)) & 1)
      v = (v * p->t[i] + (UINT64_C(1) << 30)) >> 31;
  return v;
}

/* round(m * 2^y) for y signed Q32, halves up, clamped to [1, cap];
 * m <= 2^20. */
static uint32_t scale_pow2(const pow2_tab *p, uint32_t m, int64_t y,
                           uint32_t cap) {
  if (y >= (int64_t)20 << 32)
    return cap;
  if (y < -((int64_t)60 << 32))
    return 1;
  uint64_t yy = (uint64_t)(y + ((int64_t)64 << 32));
  int n = (int)(yy >> 32) - 64; /* floor(y): -60..19 */
  uint64_t v = (uint64_t)m * exp2_frac_q31(p, yy & M32);
  unsigned shift = (unsigned)(31 - n); /* 12..91 */
  uint64_t r = shift >= 64 ? 0 : (v + (UINT64_C(1) << (shift - 1))) >> shift;
  if (r < 1)
    r = 1;
  return r > cap ? cap : (uint32_t)r;
}

/* log2(1 / u) in Q32 for u uniform in (0, 1] on 53 bits: 0 .. 53. */
static uint64_t neg_log2_u(rng *r) {
  uint64_t k = (rng_next(r) >> 11) + 1; /* 1 .. 2^53 */
  return ((uint64_t)53 << 32) - log2_q32(k);
}

/* round(ln 2 * 2^32) */
#define LN2_Q32 UINT64_C(2977044472)

/* Exponential, mean_ns (<= 2^40), in ns: mean ln(1 / u) rounded. */
static uint64_t exp_ns(rng *r, uint64_t mean_ns) {
  uint64_t ln_q32 = mul_q32(neg_log2_u(r), LN2_Q32);
  return mul_q32(ln_q32, mean_ns);
}

/* geometric(m, cap): floor(m log2(1 / u)) clamped to [1, cap]. */
static uint32_t geometric(rng *r, uint32_t m, uint32_t cap) {
  uint64_t v = ((uint64_t)m * neg_log2_u(r)) >> 32;
  if (v < 1)
    v = 1;
  return v > cap ? cap : (uint32_t)v;
}

/* log-logistic(m, 3/5, cap): m (u / (1 - u))^(3/5), u = (2k + 1) / 2^54
 * for k uniform on 53 bits (so 0 < u < 1); the exponent's 3/5 truncates
 * toward zero in Q32. */
static uint32_t log_logistic(rng *r, const pow2_tab *p, uint32_t m,
                             uint32_t cap) {
  uint64_t j = ((rng_next(r) >> 11) << 1) | 1; /* odd, 1 .. 2^54 - 1 */
  int64_t logit = (int64_t)log2_q32(j) -
                  (int64_t)log2_q32((UINT64_C(1) << 54) - j);
  return scale_pow2(p, m, logit * 3 / 5, cap);
}

/* ------------------------------------------------------------------------ */
/* Building the trace                                                        */
/* ------------------------------------------------------------------------ */

typedef struct builder {
  sim_trace *t;
  uint64_t tag, next_id;
  pow2_tab pow2;
} builder;

/* A 64-bit bijection (MurmurHash3's fmix64): distinct inputs, distinct
 * ids. */
static uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= UINT64_C(0xff51afd7ed558ccd);
  k ^= k >> 33;
  k *= UINT64_C(0xc4ceb9fe1a85ec53);
  k ^= k >> 33;
  return k;
}

/* A block id never used before in this trace (nor in another workload's:
 * the tag is in the top byte, the counter below). */
static uint64_t new_id(builder *b) {
  return fmix64((b->tag << 56) | b->next_id++);
}

static uint32_t blocks_for(uint32_t tokens) {
  return (uint32_t)((tokens + (uint64_t)SIM_BLOCK_TOKENS - 1) /
                    SIM_BLOCK_TOKENS);
}

/* Appends a request with no blocks yet; NULL if out of memory. */
static sim_req *add_req(builder *b, uint64_t arrival_ns, uint32_t in,
                        uint32_t out, uint32_t session) {
  sim_trace *t = b->t;
  if (reserve((void **)&t->req, &t->cap, t->n, 1, sizeof *t->req) < 0)
    return NULL;
  sim_req *q = &t->req[t->n++];
  memset(q, 0, sizeof *q);
  q->arrival_ns = arrival_ns;
  q->input_tokens = in;
  q->output_tokens = out;
  q->session = session;
  q->blocks_off = t->n_blocks;
  return q;
}

/* Room for more block ids. */
static int reserve_blocks(builder *b, size_t more) {
  sim_trace *t = b->t;
  return reserve((void **)&t->blocks, &t->cap_blocks, t->n_blocks, more,
                 sizeof *t->blocks);
}

/* Appends the request's remaining blocks as new ids, up to ceil(input /
 * 512) in all (room reserved by the caller). */
static void fill_new_blocks(builder *b, sim_req *q) {
  uint32_t want = blocks_for(q->input_tokens);
  while (q->n_blocks < want) {
    b->t->blocks[b->t->n_blocks++] = new_id(b);
    q->n_blocks++;
  }
}


/* ------------------------------------------------------------------------ */
/* The workloads                                                             */
/* ------------------------------------------------------------------------ */

enum { TAG_SHARED = 1, TAG_HEAVY = 2, TAG_BURSTY = 3, TAG_MULTI = 4 };

/* shared-prefix */
#define SP_GROUPS 150
#define SP_PER_GROUP 5
#define SP_SYSTEM 6000
#define SP_QUESTION 1200
#define SP_OUTPUT 1000

static int gen_shared_prefix(builder *b, uint64_t seed, size_t n) {
  if (n == 0)
    n = (size_t)SP_GROUPS * SP_PER_GROUP;
  const uint32_t in = SP_SYSTEM + SP_QUESTION;
  const uint32_t nb = blocks_for(in);                /* 15 */
  const uint32_t shared = SP_SYSTEM / SIM_BLOCK_TOKENS; /* 11 */
  sim_trace *t = b->t;
  if (n > SIZE_MAX / nb ||
      reserve((void **)&t->req, &t->cap, 0, n, sizeof *t->req) < 0 ||
      reserve_blocks(b, n * nb) < 0)
    return -1;
  size_t *order = malloc(n * sizeof *order);
  sim_req *byarr = malloc(n * sizeof *byarr);
  if (order == NULL || byarr == NULL) {
    free(order);
    free(byarr);
    return -1;
  }
  /* Content, in group order: a group's system blocks, then each prompt's
   * own. */
  uint64_t sys[SP_SYSTEM / SIM_BLOCK_TOKENS];
  for (size_t i = 0; i < n; i++) {
    if (i % SP_PER_GROUP == 0)
      for (uint32_t k = 0; k < shared; k++)
        sys[k] = new_id(b);
    sim_req *q = add_req(b, 0, in, SP_OUTPUT, 0); /* room reserved */
    for (uint32_t k = 0; k < shared; k++)
      t->blocks[t->n_blocks++] = sys[k];
    q->n_blocks = shared;
    fill_new_blocks(b, q);
  }
  /* A uniformly random order (Fisher-Yates), then Poisson arrivals. */
  rng ro, ra;
  rng_init(&ro, seed, ST_ORDER);
  rng_init(&ra, seed, ST_ARRIVALS);
  for (size_t i = 0; i < n; i++)
    order[i] = i;
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)rng_below(&ro, i);
    size_t s = order[i - 1];
    order[i - 1] = order[j];
    order[j] = s;
  }
  uint64_t now = 0;
  for (size_t i = 0; i < n; i++) {
    byarr[i] = t->req[order[i]];
    byarr[i].arrival_ns = now;
    now += exp_ns(&ra, NS_PER_S);
  }
  memcpy(t->req, byarr, n * sizeof *byarr);
  free(order);
  free(byarr);
  return 0;
}

/* heavy-tail and bursty */
#define HT_DEFAULT_N 5000
#define HT_IN_MEDIAN 1000
#define HT_IN_CAP 32000
#define HT_OUT_MEDIAN 200
#define HT_OUT_CAP 4096
#define BU_RATE_ON 10          /* requests per second while on */
#define BU_ON_MEAN_S 10        /* mean on period */
#define BU_OFF_MEAN_S 90       /* mean off period */

static int gen_independent(builder *b, uint64_t seed, size_t n, int bursty) {
  if (n == 0)
    n = HT_DEFAULT_N;
  sim_trace *t = b->t;
  if (reserve((void **)&t->req, &t->cap, 0, n, sizeof *t->req) < 0)
    return -1;
  rng rs, ra, rp;
  rng_init(&rs, seed, ST_SIZES);
  rng_init(&ra, seed, ST_ARRIVALS);
  rng_init(&rp, seed, ST_PHASES);
  /* bursty: arrivals at BU_RATE_ON/s on a clock that runs only while on
   * ("on time"); an on period ends at on_end (on time), and the off
   * periods so far add up to off_total. */
  uint64_t now = 0, on_end = 0, off_total = 0, first = 0;
  if (bursty)
    on_end = exp_ns(&rp, BU_ON_MEAN_S * NS_PER_S);
  for (size_t i = 0; i < n; i++) {
    uint32_t in = log_logistic(&rs, &b->pow2, HT_IN_MEDIAN, HT_IN_CAP);
    uint32_t out = geometric(&rs, HT_OUT_MEDIAN, HT_OUT_CAP);
    uint64_t at = now;
    if (bursty) {
      while (now >= on_end) {
        off_total += exp_ns(&rp, BU_OFF_MEAN_S * NS_PER_S);
        on_end += exp_ns(&rp, BU_ON_MEAN_S * NS_PER_S);
      }
      at = now + off_total;
      if (i == 0)
        first = at;
      at -= first;
      now += exp_ns(&ra, NS_PER_S / BU_RATE_ON);
    } else {
      now += exp_ns(&ra, NS_PER_S);
    }
    sim_req *q = add_req(b, at, in, out, 0); /* room reserved */
    if (reserve_blocks(b, blocks_for(in)) < 0)
      return -1;
    fill_new_blocks(b, q);
  }
  return 0;
}

/* multi-turn */
#define MT_SESSIONS 500
#define MT_START_MEAN_S 5 /* 0.2 sessions/s */
#define MT_MIN_TURNS 2
#define MT_MAX_TURNS 8
#define MT_FIRST_MEDIAN 500
#define MT_FIRST_CAP 8000
#define MT_NEXT_MEDIAN 100
#define MT_NEXT_CAP 2000
#define MT_ANSWER_MEDIAN 200
#define MT_ANSWER_CAP 4096
#define MT_PROMPT_CAP 32000
#define MT_THINK_MEAN_S 10

static int gen_multi_turn(builder *b, uint64_t seed, size_t n) {
  sim_trace *t = b->t;
  rng ra, rt, rk;
  rng_init(&ra, seed, ST_ARRIVALS);
  rng_init(&rt, seed, ST_TURNS);
  rng_init(&rk, seed, ST_THINK);
  uint64_t start = 0;
  for (uint32_t s = 1; n ? t->n < n : s <= MT_SESSIONS; s++) {
    uint32_t turns =
        MT_MIN_TURNS +
        (uint32_t)rng_below(&rt, MT_MAX_TURNS - MT_MIN_TURNS + 1);
    uint32_t len = log_logistic(&rt, &b->pow2, MT_FIRST_MEDIAN, MT_FIRST_CAP);
    uint64_t at = start;
    size_t prev = 0; /* index of the previous turn */
    for (uint32_t k = 1; k <= turns && (n == 0 || t->n < n); k++) {
      uint32_t answer = geometric(&rt, MT_ANSWER_MEDIAN, MT_ANSWER_CAP);
      uint32_t nb = blocks_for(len);
      if (reserve_blocks(b, nb) < 0)
        return -1;
      sim_req *q = add_req(b, at, len, answer, s);
      if (q == NULL)
        return -1;
      if (k > 1) { /* the previous prompt's complete blocks */
        const sim_req *p = &t->req[prev];
        uint32_t keep = p->input_tokens / SIM_BLOCK_TOKENS;
        memcpy(t->blocks + t->n_blocks, t->blocks + p->blocks_off,
               keep * sizeof *t->blocks);
        t->n_blocks += keep;
        q->n_blocks = keep;
      }
      fill_new_blocks(b, q);
      prev = t->n - 1;
      uint32_t question =
          log_logistic(&rt, &b->pow2, MT_NEXT_MEDIAN, MT_NEXT_CAP);
      uint64_t next = (uint64_t)len + answer + question;
      if (next > MT_PROMPT_CAP)
        break;
      len = (uint32_t)next;
      at += exp_ns(&rk, MT_THINK_MEAN_S * NS_PER_S);
    }
    start += exp_ns(&ra, MT_START_MEAN_S * NS_PER_S);
  }
  return sim_trace_sort(t);
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                               */
/* ------------------------------------------------------------------------ */

int sim_workload(sim_trace *t, const char *name, uint64_t seed, size_t n,
                 char *err, size_t errlen) {
  memset(t, 0, sizeof *t);
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  int w = -1;
  for (int i = 0; name != NULL && sim_workload_names[i] != NULL; i++)
    if (strcmp(name, sim_workload_names[i]) == 0)
      w = i;
  if (w < 0) {
    sim_set_err(err, errlen,
            "unknown workload \"%s\" (known: shared-prefix, heavy-tail, "
            "bursty, multi-turn)",
            name != NULL ? name : "(null)");
    return -1;
  }
  if ((uint64_t)n > SIM_WORKLOAD_MAX_N) {
    sim_set_err(err, errlen, "n = %llu is too large (at most %lu)",
            (unsigned long long)n, (unsigned long)SIM_WORKLOAD_MAX_N);
    return -1;
  }
  builder b;
  memset(&b, 0, sizeof b);
  b.t = t;
  pow2_tab_init(&b.pow2);
  int rc;
  switch (w) {
  case 0:
    b.tag = TAG_SHARED;
    rc = gen_shared_prefix(&b, seed, n);
    break;
  case 1:
    b.tag = TAG_HEAVY;
    rc = gen_independent(&b, seed, n, 0);
    break;
  case 2:
    b.tag = TAG_BURSTY;
    rc = gen_independent(&b, seed, n, 1);
    break;
  default:
    b.tag = TAG_MULTI;
    rc = gen_multi_turn(&b, seed, n);
    break;
  }
  if (rc < 0) {
    sim_trace_free(t);
    sim_set_err(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}
