/* Internal structures shared by src/core and src/policy. Not installed.
 * SPDX-License-Identifier: MIT */
#ifndef ILB_CORE_INTERNAL_H
#define ILB_CORE_INTERNAL_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "inferlb/inferlb.h"

#define ILB__CACHELINE 64
#define ILB__STRIPES 64 /* per-thread scratch: RNG, RR cursor */
#define ILB__PRIV 32    /* private ticket entries per stripe */
_Static_assert(ILB__PRIV == ILB_THREAD_TICKETS, "header and core disagree");
_Static_assert((ILB__PRIV & (ILB__PRIV - 1)) == 0, "ILB__PRIV: power of 2");
_Static_assert(ILB__STRIPES == 64, "the header documents 64 owning threads");
#define ILB__SEG_SHIFT 8 /* 256 slots per segment */
#define ILB__SEG_SIZE (1u << ILB__SEG_SHIFT)
#define ILB__SEG_MAX 4096 /* => at most 1,048,576 replica slots */
#define ILB__SLOTS_MAX (ILB__SEG_SIZE * ILB__SEG_MAX)

#if defined(__GNUC__)
#define ILB__LIKELY(x) __builtin_expect(!!(x), 1)
#define ILB__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define ILB__PRINTF(a, b) __attribute__((format(printf, a, b)))
#define ILB__INLINE inline __attribute__((always_inline))
#define ILB__NOINLINE __attribute__((noinline))
#else
#define ILB__INLINE inline
#define ILB__NOINLINE
#define ILB__LIKELY(x) (x)
#define ILB__UNLIKELY(x) (x)
#define ILB__PRINTF(a, b)
#endif

/* A spin-wait hint (a waiter on a lock word another thread holds). */
static inline void ilb__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* ---- allocation (host hook or malloc) ---------------------------------- */

struct ilb__alloc {
  void *(*alloc)(size_t size, void *user_data);
  void (*free)(void *ptr, void *user_data);
  void *user_data;
};

void *ilb__malloc(const struct ilb__alloc *a, size_t size);
void *ilb__calloc(const struct ilb__alloc *a, size_t n, size_t size);
void ilb__free(const struct ilb__alloc *a, void *p);
/* Cache-line aligned block; free with ilb__free_aligned. */
void *ilb__calloc_aligned(const struct ilb__alloc *a, size_t size);
void ilb__free_aligned(const struct ilb__alloc *a, void *p);

/* ---- sized structs ------------------------------------------------------ */

/* Validate an input struct of the caller's size against ours: 0 when usable
 * (caller's size >= min_size, any tail beyond ours is zero), else ILB_ESIZE. */
int ilb__check_struct_in(const void *p, size_t caller_size, size_t ours,
                         size_t min_size);

/* ---- random ------------------------------------------------------------- */

/* splitmix64 (Steele, Lea, Flood 2014; constants from Vigna's reference). */
#define ILB__GOLDEN UINT64_C(0x9e3779b97f4a7c15)
static inline uint64_t ilb__mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}
/* Lemire's multiply-shift: uniform-ish x in [0, n) from 32 random bits. */
static inline uint32_t ilb__range32(uint32_t x, uint32_t n) {
  return (uint32_t)(((uint64_t)x * n) >> 32);
}

/* ---- hashing (hash.c) --------------------------------------------------- */

/* XXH64 of len bytes at p (Collet's specification, xxhash.com). */
uint64_t ilb__xxh64(const void *p, size_t len, uint64_t seed);
int ilb__is_prime(uint32_t x);

/* ---- replicas ----------------------------------------------------------- */

/* composite's precomputed telemetry terms of one replica, in stages: stage
 * 0 has every signal fresh at the last report and holds until the first of
 * them expires; stage j + 1 drops the signals that expired at stage j's
 * end. So a signal reported once (total GPU memory, model ready) going
 * stale takes out only its own term. */
#define ILB__TM_STAGES 4
struct ilb__tm_stage {
  _Atomic uint64_t until; /* host clock (ns) it is valid until; 0 = none */
  _Atomic uint32_t word;  /* float score bits, ILB__TM_SAT: saturated */
  uint32_t pad;
};

/* Hot per-replica counters. Stable address for the pool's lifetime; a slot
 * is reused for a new replica only after its old replica was removed, that
 * removal was published, and its in-flight count reached zero. */
struct ilb__slot {
  /* Line 0, what a pick reads of a candidate (and what picks and
   * completions write: in-flight, tokens, latency). */
  /* completed (low 32 bits) << 32 | in_flight: a completion is one
   * fetch_add of 2^32 - 1. in_flight never exceeds the ticket table size
   * (<= 2^24), so it never borrows from the completion bits. */
  alignas(ILB__CACHELINE) _Atomic uint64_t load;
  _Atomic uint64_t tokens;     /* token cost of the requests in flight */
  struct ilb__tm_stage tm0; /* composite's telemetry score, stage 0 */
  _Atomic uint64_t ewma;       /* latency estimate, double bits (ns); 0 none */
  _Atomic uint64_t ewma_stamp; /* host clock of the last observation */
  _Atomic uint32_t live;       /* 1 while in the pool, 0 once removed */
  /* What picks obey: the low 16 bits are ILB_EXCLUDED_* bits (any set:
   * skipped), the high 16 a half-open breaker's in-flight limit (0 none).
   * Derived from `why` by the writer (ilb__hsync), except that
   * completions set and clear bits lock-free (see health/passive.c). */
  _Atomic uint32_t down;
  uint32_t index;              /* own slot number */
  /* Consecutive errors (low 16 bits) and gateway failures (high 16),
   * saturating; reset by a success. */
  _Atomic uint32_t consec;

  /* Line 1 on: counters read by ilb_replica_get, writer-only fields. */
  alignas(ILB__CACHELINE) _Atomic uint64_t completed_hi; /* carries of the
                                                32-bit completion count */
  _Atomic uint64_t failed;
  struct ilb__replica *rep; /* owned; writer-only */
  _Atomic uint32_t gen;     /* times the slot was given to a new replica */
  uint64_t dead_version;    /* snapshot version without it; writer-only */

  struct ilb__tm_stage tm_more[ILB__TM_STAGES - 1]; /* stages 1.. */

  /* Health (health/): written by completions lock-free and by the writer.
   * why: every ILB_EXCLUDED_* reason, whatever the panic mode says. */
  _Atomic uint32_t why;
  _Atomic uint32_t brk;   /* ILB__BRK_STATE bits | successes << 2 */
  _Atomic uint32_t pend;  /* ILB__PEND_* for the next ilb_next_due */
  _Atomic uint32_t eject_reason; /* enum ilb_reason of a pending ejection */
  _Atomic uint32_t brk_reason;   /* enum ilb_reason of the last transition */
  _Atomic uint64_t errors;       /* completions that were errors */
  _Atomic uint64_t neutral;      /* completions that were CANCELLED */
  _Atomic uint64_t eject_at;     /* host clock of a completion's ejection */
  _Atomic uint64_t brk_at;       /* host clock of the last breaker change */
  _Atomic uint64_t drained_at;   /* host clock of the last completion */
  _Atomic uint64_t closed_at;    /* host clock a half-open breaker closed */
  /* breaker window start: completions and errors then (writer-set) */
  _Atomic uint64_t win_c, win_e;

  /* Prefix index (policy/prefix_index.c). A record of this replica made
   * at position q is live while pfx_head - q <= pfx_cap (an LRU of
   * pfx_cap blocks); picks fetch_add pfx_head, forgetting everything jumps
   * it past every live record. Its own line: picks write it. */
  alignas(ILB__CACHELINE) _Atomic uint64_t pfx_head;
  _Atomic uint32_t pfx_cap;     /* blocks; 0 until set by the writer */
  _Atomic uint32_t pfx_queue;   /* requests waiting (telemetry) ... */
  _Atomic uint64_t pfx_q_until; /* ... fresh until (host clock); 0 none */
  uint64_t pfx_kv_tokens;       /* KV capacity by telemetry; writer-only */
  uint64_t pfx_forgot;          /* head after the last forget; writer-only */
  uint64_t pfx_seq;             /* last KV event seq applied; writer-only */

  /* Reported telemetry: writer-only (pool mutex). */
  uint64_t tm_present; /* ILB_SIGNAL_BIT()s ever reported */
  double tm_val[ILB_SIGNAL_COUNT];
  uint64_t tm_ts[ILB_SIGNAL_COUNT];
};
_Static_assert(offsetof(struct ilb__slot, consec) < ILB__CACHELINE,
               "what a pick reads fits one cache line");

#define ILB__TM_SAT 0x80000000u

/* The telemetry terms of a slot fresh at time now: 1 with *score and
 * *saturated set, or 0 (none, or all stale); u is stage 0's expiry as
 * loaded by the caller. A writer may be updating the stages meanwhile: the
 * worst a reader sees is one report's score with another's expiry. */
static inline int ilb__tm_read_from(const struct ilb__slot *s, uint64_t u,
                                    uint64_t now, float *score,
                                    int *saturated) {
  const struct ilb__tm_stage *st = &s->tm0;
  for (int j = 0;;) {
    if (now < u) {
      uint32_t b = atomic_load_explicit(&st->word, memory_order_relaxed);
      *saturated = (b & ILB__TM_SAT) != 0;
      b &= ~ILB__TM_SAT;
      memcpy(score, &b, sizeof(*score));
      return 1;
    }
    if (u == 0 || ++j == ILB__TM_STAGES)
      return 0;
    st = &s->tm_more[j - 1];
    u = atomic_load_explicit(&st->until, memory_order_relaxed);
  }
}

/* The same, loading stage 0's expiry itself. */
static inline int ilb__tm_read(const struct ilb__slot *s, uint64_t now,
                               float *score, int *saturated) {
  return ilb__tm_read_from(
      s, atomic_load_explicit(&s->tm0.until, memory_order_relaxed), now,
      score, saturated);
}

/* exp(-x) for x >= 0 without libm: 2^-(x log2 e), a degree-9 Taylor
 * series on the fraction (relative error < 2e-8), 0 beyond x = 700. */
static inline double ilb__exp_neg(double x) {
  if (!(x > 0)) /* also NaN */
    return 1.0;
  if (x > 700)
    return 0.0;
  double t = x * 1.4426950408889634; /* log2(e) */
  int k = (int)t;                      /* t < 1010 */
  double y = (t - k) * 0.6931471805599453, r = 1.0, term = 1.0;
  for (int i = 1; i <= 9; i++) {
    term *= -y / i;
    r += term;
  }
  uint64_t bits = (uint64_t)(1023 - k) << 52; /* 2^-k, k <= 1010 */
  double scale;
  memcpy(&scale, &bits, sizeof(scale));
  return r * scale;
}

static inline double ilb__d_from_bits(uint64_t b) {
  double d;
  memcpy(&d, &b, sizeof(d));
  return d;
}
static inline uint64_t ilb__d_bits(double d) {
  uint64_t b;
  memcpy(&b, &d, sizeof(b));
  return b;
}

/* Writer-side health of one replica (health/, pool mutex). */
struct ilb__hrec {
  int32_t health;        /* enum ilb_health */
  uint32_t passes, nonpass, fails; /* probe results in a row */
  uint64_t next_probe, next_scrape; /* host clock */
  uint64_t eject_until;  /* while ejected */
  uint64_t eject_since;
  uint32_t eject_n;      /* ejection multiplier */
  uint64_t eject_total;  /* ejections ever (stats; never lowered) */
  uint32_t eject_seen;   /* the current ejection was reported */
  uint32_t clean;        /* intervals since the last ejection ended */
  int32_t brk_seen;      /* breaker state last reported */
  uint64_t ramp_start;   /* slow start began; 0 = not ramping */
  uint32_t ramp_q;       /* effective weight in 32nds (32 = full) */
  uint32_t draining;     /* 1 while draining */
  uint32_t drain_seen;   /* ILB_EVENT_DRAINED delivered */
  uint32_t avail_in;     /* its weight is in snap->avail_weight */
  uint64_t drain_deadline; /* 0 = none */
  uint64_t iv_c, iv_e;   /* completions / errors at the interval start */
  uint64_t half_c, half_e; /* the same at the current half-window start */
  uint64_t prev_c, prev_e; /* and at the previous one's */
  uint64_t last_dc, last_de; /* completions / errors in the last interval */
};

/* Writer-side record of one replica; one allocation with its strings. */
struct ilb__replica {
  char *id;
  size_t id_len;
  char *zone;        /* NULL when none */
  ilb_label *labels; /* copies */
  uint32_t n_labels;
  uint32_t weight;
  uint32_t capacity;
  uint32_t slot;
  uint32_t pub_weight; /* weight in the published snapshot, 0 when
                          not in it (see ilb__snap.avail_weight) */
  void *host_data;
  uint64_t hash; /* of id, for the index */
  struct ilb__hrec h;
};

/* ---- snapshot ----------------------------------------------------------- */

/* What a policy sees of one replica. */
struct ilb__cand {
  struct ilb__slot *slot;
  const char *id; /* NUL-terminated */
  void *host_data;
  uint32_t weight;
  uint32_t capacity; /* 0 = unlimited */
};

struct ilb__policy;

/* Immutable once published, but for avail_weight. */
struct ilb__snap {
  uint64_t version;
  uint32_t n;
  uint32_t p2c_k;
  uint64_t total_weight;
  uint32_t wscale; /* cand weights are the host's times this (slow start) */
  /* Total weight of the available candidates: set when built, then kept
   * up to date by ilb_replica_set_available (writer) without a rebuild. */
  _Atomic uint64_t avail_weight;
  int allow_over;
  /* hashing policies (options at build time) */
  int32_t no_key;
  uint32_t ring_vnodes;
  uint32_t maglev_m; /* 0 = auto */
  uint32_t balance_pct;
  /* scoring policies (options at build time) */
  uint32_t scan_max;
  int32_t all_stale;
  double tie;                 /* ILB_OPT_TIE_PERCENT / 100 */
  double w_queue;             /* ILB_OPT_SCORE_QUEUE / 1000 */
  double ewma_tau_ns;
  double ewma_default_ns;
  uint32_t token_out_pct;
  uint32_t token_default;
  /* prefix policy (options at build time) */
  struct ilb__pindex *pidx; /* the pool's prefix index; NULL unless prefix */
  const struct ilb_pool *pool;
  uint32_t pfx_block_bytes, pfx_block_tokens;
  uint32_t pfx_max_blocks, pfx_mode;
  uint64_t pfx_w_prefill, pfx_w_load, pfx_w_queue; /* percent */
  uint64_t pfx_bound_min;
  const struct ilb__policy *policy;
  void *pstate;                   /* policy's precomputed tables */
  struct ilb__snap *retired_next; /* kept until ilb_pool_free, rarely */
  struct ilb__cand *cand;         /* n entries, registry order */
  /* slot index -> candidate index + 1 (0: not a candidate), n_slotmap
   * entries: a sticky session finds its replica in O(1) */
  uint32_t *slotmap;
  uint32_t n_slotmap;
  /* Locality (ILB_OPT_LOCALITY, 2 or more zones): zone_of[k] is candidate
   * k's zone (ILB__ZONE_NONE: none, or beyond ILB__ZONES_MAX), zsub[z]
   * the snapshot of zone z's candidates (own policy tables; shares the
   * parent's prefix index; freed with it), zname[z] its name. */
  uint32_t n_zones;
  uint32_t zone_sub; /* 1: this is a zone's snapshot (of a parent's) */
  uint8_t *zone_of;
  struct ilb__snap **zsub;
  const char **zname;
};
#define ILB__ZONES_MAX 64
#define ILB__ZONE_NONE 0xffu

/* Per-thread scratch (a thread maps to stripe tid % ILB__STRIPES). Threads
 * that share a stripe only lose randomness quality, never correctness:
 * fields are relaxed atomics with plain load/store, no read-modify-write. */
struct ilb__stripe {
  alignas(ILB__CACHELINE) _Atomic uint64_t rng;
  _Atomic uint64_t rr;
  _Atomic uint32_t cursor; /* next shared ticket entry to try */
  uint32_t pcursor;        /* next private entry; owner thread only */
  uint32_t pskip;          /* picks left before rescanning the private
                              entries after finding them all busy */
  _Atomic uint64_t picks;  /* successful picks (the retry budget); owner
                              thread, load + store */
  /* prefix index counters (ilb_prefix_stats); owner thread, load + store */
  _Atomic uint64_t pfx_lookups, pfx_blocks, pfx_matched, pfx_recorded,
      pfx_dropped, pfx_evicted;
};

/* ---- tickets ------------------------------------------------------------ */

/* Ticket table entry (64 bits): seq:32 | kind:2 | slot:30.
 * A ticket is (seq << 32) | entry index; seq is never 0, so neither is a
 * ticket. kind PICKING marks a pick in progress: it is also how a writer
 * knows a reader may still hold an old snapshot. */
#define ILB__T_FREE 0u
#define ILB__T_PICKING 1u
#define ILB__T_OUT 2u
#define ILB__T_KIND(s) ((uint32_t)(((s) >> 30) & 3u))
#define ILB__T_SLOT(s) ((uint32_t)((s)&0x07ffffffu))
/* In an OUT entry: the pick was counted in ilb_pool.hash_in_flight. */
#define ILB__T_COUNTED (UINT64_C(1) << 29)
/* In an OUT entry: a token cost is in ilb__ttab.cost[index]. */
#define ILB__T_COST (UINT64_C(1) << 28)
/* In an OUT entry: the pick was counted in ilb_pool.pool_in_flight. */
#define ILB__T_POOLCNT (UINT64_C(1) << 27)
_Static_assert(ILB__SLOTS_MAX <= (1u << 27), "slot numbers below the flags");
_Static_assert(ILB__SLOTS_MAX <= 0x07ffffffu, "slot numbers fit the entry");
#define ILB__T_SEQ(s) ((uint32_t)((s) >> 32))
#define ILB__T_MAKE(seq, kind, slot)                                           \
  (((uint64_t)(seq) << 32) | ((uint64_t)(kind) << 30) | (uint64_t)(slot))

/* Ticket table: mask + 1 shared entries (claimed with CAS), then ILB__PRIV
 * private entries per stripe (claimed by the owner thread with a plain
 * store); size in all. Published as one pointer so a completion never pairs
 * one table's size with another's entries; a replaced table is kept (prev)
 * until the pool is freed, so even a completion racing a resize reads valid
 * memory. */
struct ilb__ttab {
  uint32_t mask;
  uint32_t size;
  struct ilb__ttab *prev;
  _Atomic uint32_t *cost; /* size entries: token cost of an OUT entry */
  alignas(ILB__CACHELINE) _Atomic uint64_t e[];
};

/* ---- pool --------------------------------------------------------------- */

#define ILB__OPT_H_FIRST ILB_OPT_HEALTH_INITIAL
#define ILB__OPT_H_LAST ILB_OPT_RETRY_BACKOFF_MAX_MS
#define ILB__OPT_H_N (ILB__OPT_H_LAST - ILB__OPT_H_FIRST + 1)
#define ILB__OPT_PFX_FIRST ILB_OPT_PREFIX_BLOCK_BYTES
#define ILB__OPT_PFX_LAST ILB_OPT_PREFIX_BOUND_MIN
#define ILB__OPT_PFX_N (ILB__OPT_PFX_LAST - ILB__OPT_PFX_FIRST + 1)
#define ILB__OPT_SCALE_N 7 /* ILB_OPT_SCALE_TARGET_IN_FLIGHT.. */
#define ILB__OPT_ROUTER ((size_t)-1) /* opt_defs: a router option */
#define ILB__BUDGET_SLOTS 11 /* 10 s window of 1 s slots, plus the current */

struct ilb_pool {
  /* read by picks */
  _Atomic(struct ilb__snap *) snap;
  struct ilb__snap *retired;      /* see ilb__writer_barrier */
  _Atomic(struct ilb__ttab *) tt; /* current ticket table */
  uint64_t ticket_salt;           /* per pool, see tickets_alloc */
  uint64_t ticket_gen;            /* tables allocated so far */
  ilb_host host;
  struct ilb__alloc a;
  struct ilb__stripe *stripes; /* ILB__STRIPES, aligned block */
  _Atomic(struct ilb__slot *) seg[ILB__SEG_MAX];

  /* options (written under mutex, read lock-free) */
  _Atomic int64_t opt_policy;
  _Atomic int64_t opt_p2c_k;
  _Atomic int64_t opt_max_in_flight;
  _Atomic int64_t opt_allow_over;
  _Atomic int64_t opt_no_key;
  _Atomic int64_t opt_ring_vnodes;
  _Atomic int64_t opt_maglev_m;
  _Atomic int64_t opt_balance;
  _Atomic int64_t opt_tm_max_age_ms;
  _Atomic int64_t opt_tm_all_stale;
  _Atomic int64_t opt_score[5]; /* queue, gpu, kv, latency, memory */
  _Atomic int64_t opt_scan_max;
  _Atomic int64_t opt_kv_sat_pct;
  _Atomic int64_t opt_mem_min_mib;
  _Atomic int64_t opt_tie_pct;
  _Atomic int64_t opt_ewma_decay_ms;
  _Atomic int64_t opt_ewma_default_ms;
  _Atomic int64_t opt_ewma_penalty_ms;
  _Atomic int64_t opt_token_out_pct;
  _Atomic int64_t opt_token_default;
  _Atomic int64_t opt_h[ILB__OPT_H_N]; /* ILB__OPT_H_FIRST.. (health) */
  _Atomic int64_t opt_pfx[ILB__OPT_PFX_N]; /* ILB__OPT_PFX_FIRST.. */
  _Atomic int64_t opt_loc[3]; /* ILB_OPT_LOCALITY.. */
  _Atomic int64_t opt_scale[ILB__OPT_SCALE_N];

  /* Latest "fresh until" (host clock, ns) of any replica's telemetry:
   * once passed, no replica has fresh telemetry. Writer-updated. */
  _Atomic uint64_t tm_until_max;

  /* Requests in flight placed by a policy that counts them (chwbl): one
   * shared counter, touched only by such picks and their completions. */
  alignas(ILB__CACHELINE) _Atomic uint64_t hash_in_flight;
  char hash_pad[ILB__CACHELINE - sizeof(uint64_t)];
  /* Requests in flight, counted while ILB_OPT_POOL_MAX_IN_FLIGHT is set. */
  alignas(ILB__CACHELINE) _Atomic uint64_t pool_in_flight;
  char pool_pad[ILB__CACHELINE - sizeof(uint64_t)];

  /* health: read by completions */
  _Atomic uint32_t n_members; /* replicas in the registry */
  _Atomic uint32_t n_ejected; /* with ILB_EXCLUDED_EJECTED in why */
  _Atomic uint32_t panic;     /* 1: picks obey only HOST and DRAINING */
  _Atomic uint64_t n_retries, n_retry_denied, n_shed;
  /* retry budget (health/retry.c), under budget_mu */
  pthread_mutex_t budget_mu;
  uint64_t bud_sec[ILB__BUDGET_SLOTS];   /* second of each slot, +1 */
  uint64_t bud_picks[ILB__BUDGET_SLOTS]; /* picks when the second began */
  uint64_t bud_retries[ILB__BUDGET_SLOTS];
  uint64_t bud_base_sec, bud_base_picks; /* last sample before the window */

  /* writer side, under mutex */
  pthread_mutex_t mu;
  uint32_t batch_depth;
  int dirty;                  /* registry differs from snapshot */
  int tm_dirty;               /* telemetry scores to recompute at commit */
  uint64_t version;           /* of the last built snapshot */
  struct ilb__replica **reps; /* registry, insertion order */
  uint32_t n_reps, cap_reps;
  uint32_t *index;      /* id hash -> position+1, 0 empty */
  uint32_t index_cap;   /* power of two */
  uint32_t n_slots;     /* slots ever created */
  uint32_t *free_slots; /* reusable slot numbers */
  uint32_t n_free, cap_free;
  uint32_t *zombies; /* removed, maybe still in flight */
  uint32_t n_zombies, cap_zombies;
  /* health timers (writer) */
  uint64_t next_interval; /* outlier analysis */
  uint64_t next_half;     /* breaker half-window */
  uint64_t wrng;          /* writer's random stream (jitter) */
  uint32_t ramping;       /* replicas in slow start */
  uint32_t ramp_scaled;   /* the published weights are scaled by 32 */
  uint32_t ramp_dirty;    /* a slow-start step still to publish */
  /* prefix index (policy/prefix_index.c): the current one, and those
   * replaced while a late pick might still read them (membarrier failed) */
  struct ilb__pindex *pidx;
  struct ilb__pindex *pidx_retired;
  /* traffic/: references (the host's and a router's; freed at 0), the
   * router tag stamped on tickets (0: none; set once), the autoscaling
   * history (autoscale.c, under mu) */
  _Atomic uint32_t refs;
  _Atomic uint32_t ticket_tag;
  void *autoscale;
};

#define ILB__INFLIGHT(w) ((w)&UINT64_C(0xffffffff))
#define ILB__COMPLETE_ADD ((UINT64_C(1) << 32) - 1)

static inline struct ilb__slot *ilb__slot_at(struct ilb_pool *p, uint32_t i) {
  struct ilb__slot *seg =
      atomic_load_explicit(&p->seg[i >> ILB__SEG_SHIFT], memory_order_acquire);
  return seg + (i & (ILB__SEG_SIZE - 1));
}

/* thread.c */
extern _Thread_local uint32_t ilb__tl_tid
#if defined(__GNUC__)
    __attribute__((tls_model("initial-exec")))
#endif
    ;
#define ILB__MB_OFF 0 /* picks on private entries fence themselves */
#define ILB__MB_ON 1  /* writers issue membarrier(2) instead */
/* ILB__MB_FAILED: it failed once: picks fence, writers keep old snapshots
 * and removed replicas (sticky). */
#define ILB__MB_FAILED 2
extern _Atomic int ilb__mb_state;
void ilb__thread_init(void);
uint32_t ilb__thread_register(void); /* returns the new ilb__tl_tid */
/* Order private-entry claims before a ticket scan; -1 if that can no longer
 * be guaranteed (then old snapshots must not be freed early). */
int ilb__writer_barrier(void);

/* host.c */
void ilb__log(struct ilb_pool *p, int32_t level, const char *fmt, ...)
    ILB__PRINTF(3, 4);
uint64_t ilb__now(const struct ilb_pool *p);
uint64_t ilb__host_now(const ilb_host *h);
/* The clock of the pick and complete paths: the host's, or by default
 * CLOCK_MONOTONIC_COARSE (a few ns instead of ~25 on a VM; it lags
 * CLOCK_MONOTONIC by less than one kernel tick). */
uint64_t ilb__now_fast(const struct ilb_pool *p);
/* Validate host (NULL = defaults) and copy it to *dst with struct_size set;
 * 0, ILB_ESIZE or ILB_EINVAL (alloc/free not paired, bad log_level,
 * reserved0 not 0). */
int ilb__host_copy(ilb_host *dst, const ilb_host *host);

/* snapshot.c: build from the registry and publish; frees the old snapshot
 * once no reader can hold it. Mutex held. ILB_ENOMEM leaves all unchanged. */
int ilb__publish(struct ilb_pool *p);
void ilb__snap_free(struct ilb_pool *p, struct ilb__snap *s);
/* Wait until no pick that could have loaded an older snapshot is running.
 * 0, or -1 when that cannot be known (see ilb__writer_barrier). */
int ilb__wait_readers(struct ilb_pool *p);

/* pool.c: the writer lock and the replica index, for telemetry.c */
int ilb__writer_enter(struct ilb_pool *p);
int ilb__writer_leave(struct ilb_pool *p, int rc);
/* Publish now, or at the commit of the open batch. */
int ilb__commit(struct ilb_pool *p);
/* Enter as the writer and find id's replica; on failure nothing is held. */
int ilb__enter_find(struct ilb_pool *p, const char *id,
                    struct ilb__replica **out);
/* Find id's replica with the mutex held: 0, ILB_EINVAL or ILB_ENOENT. */
int ilb__find_locked(struct ilb_pool *p, const char *id,
                     struct ilb__replica **out);

/* For readers that fill an output struct about one replica: the bytes to
 * write (min of the caller's size and ours; ILB_ESIZE below min), then
 * the replica with the pool mutex held (on success only). */
int ilb__out_find(struct ilb_pool *p, const char *id, size_t caller,
                  size_t min, size_t ours, size_t *want,
                  struct ilb__replica **out);

/* telemetry.c (mutex held) */
void ilb__tm_reset(struct ilb__slot *s);             /* a new replica */
/* Recompute one replica's / every replica's composite scores (options,
 * weights or membership changed); inside a batch, at its commit. */
void ilb__tm_refresh(struct ilb_pool *p, struct ilb__replica *r);
void ilb__tm_refresh_all(struct ilb_pool *p);
/* What ilb_pick does not do by itself (retries, sticky sessions). */
struct ilb__pick_opts {
  /* avoid the replicas whose slot index + 1 is in excl[0..n_excl) while
   * another available one has room */
  const uint64_t *excl;
  uint32_t n_excl;
  /* prefer the replica in slot want - 1 (0: none) while it is a
   * candidate, available, has room, and -- bound_pct > 0 -- has fewer
   * requests in flight than ceil(bound_pct / 100 * (T + 1) / A), T the
   * requests in flight on the A available candidates */
  uint32_t want;
  uint32_t want_gen; /* ... while its slot's gen is this (same replica) */
  uint32_t bound_pct;
  /* out: the slot index picked and its gen, and whether it was want's */
  uint32_t slot_out, gen_out;
  int want_taken;
};
/* pick.c: ilb_pick with opts (NULL: none). */
int ilb__pick_ex(ilb_pick_result *res, struct ilb_pool *p,
                 const ilb_request *req, struct ilb__pick_opts *opts);
/* pick.c: complete a ticket; *slot_out = its slot index (on 0 and
 * ILB_EREMOVED). */
int ilb__complete(struct ilb_pool *p, uint64_t ticket,
                  const ilb_outcome *outcome, uint32_t *slot_out);
/* pick.c: the latency estimate decayed to now, in ns; -1 when none. */
double ilb__ewma_now(const struct ilb__slot *s, double tau_ns, uint64_t now);

/* ---- health (src/health/) ------------------------------------------------ */

#define ILB__EXCL_MASK 0xffffu
/* `why` holds ILB_EXCLUDED_HOST, _HEALTH (unhealthy), _EJECTED and
 * _DRAINING, and: */
/* active health UNKNOWN or STARTING: not ready (not failed: panic mode
 * does not route to it either) */
#define ILB__WHY_NOTREADY 0x4000u
/* the replica was removed (its slot's last completions must not eject it
 * and leak an ejection from the pool's count) */
#define ILB__WHY_GONE 0x8000u
/* The breaker's exclusion is not in `why`: it is brk's state (OPEN). */
#define ILB__EXCL_PANIC_KEEP                                                 \
  (ILB_EXCLUDED_HOST | ILB_EXCLUDED_DRAINING | ILB__WHY_NOTREADY |          \
   ILB__WHY_GONE)
#define ILB__BRK_STATE 3u /* enum ilb_breaker in brk's low bits */
#define ILB__PEND_EJECT 1u
#define ILB__PEND_BRK 2u
#define ILB__PEND_DRAINED 4u
#define ILB__PEND_BRK_CLOSED 8u /* a half-open breaker closed */
#define ILB__RAMP_STEPS 32u

/* ilb_replica_info.excluded from why and brk. */
static inline uint32_t ilb__excluded(uint32_t why, uint32_t brk) {
  uint32_t e = why & (ILB_EXCLUDED_HOST | ILB_EXCLUDED_HEALTH |
                      ILB_EXCLUDED_EJECTED | ILB_EXCLUDED_DRAINING);
  if (why & ILB__WHY_NOTREADY)
    e |= ILB_EXCLUDED_HEALTH;
  if ((brk & ILB__BRK_STATE) == ILB_BREAKER_OPEN)
    e |= ILB_EXCLUDED_BREAKER;
  return e;
}

static inline int64_t ilb__hopt(const struct ilb_pool *p, int32_t id) {
  return atomic_load_explicit(&p->opt_h[id - ILB__OPT_H_FIRST],
                              memory_order_relaxed);
}

/* pool.c */
void ilb__emit(struct ilb_pool *p, int32_t type, const struct ilb__replica *r,
               int32_t old_state, int32_t new_state, uint64_t old_value,
               uint64_t new_value, int32_t reason, uint64_t ts);
int32_t ilb__state_of(struct ilb__slot *s);
uint64_t ilb__completed(struct ilb__slot *s); /* completions so far */

/* health.c (pool mutex held unless said otherwise) */
void ilb__health_init(struct ilb_pool *p); /* at ilb_pool_new */
void ilb__health_added(struct ilb_pool *p, struct ilb__replica *r);
void ilb__health_removed(struct ilb_pool *p, struct ilb__replica *r);
/* Recompute the slot's `down` from `why`, the breaker and the panic mode,
 * and keep the snapshot's available weight in step. */
void ilb__hsync(struct ilb_pool *p, struct ilb__replica *r);
/* Enter or leave panic mode as the healthy share says. O(replicas); at
 * the outermost batch commit when a batch is open. */
void ilb__panic_check(struct ilb_pool *p, uint64_t now);
/* A health option changed: re-derive exclusions, ramps and timers. */
void ilb__health_opt_changed(struct ilb_pool *p);
/* The weight to publish: r->weight, times its slow-start step while the
 * pool's weights are scaled (ramp_scaled). */
uint32_t ilb__eff_weight(const struct ilb_pool *p,
                         const struct ilb__replica *r);
/* 64 random bits for the writer (jitter): host rand or p->wrng. */
uint64_t ilb__wrand(struct ilb_pool *p);
/* Set the snapshot's weights scaled or not for the next publish. */
void ilb__ramp_prepare(struct ilb_pool *p, int weighted_policy);

/* passive.c: lock-free, from ilb_complete on a live replica */
enum { ILB__CLS_NEUTRAL = 0, ILB__CLS_SUCCESS, ILB__CLS_ERROR,
       ILB__CLS_GATEWAY };
/* An outcome for passive health: gateway failure (CONNECT_ERROR, REFUSED,
 * TIMEOUT), error (5xx, or HTTP_ERROR without a status), neutral
 * (CANCELLED) or success (OK, 4xx). */
static inline int ilb__outcome_class(int32_t status, int32_t http) {
  if (status == ILB_OUTCOME_OK && http < 500)
    return ILB__CLS_SUCCESS;
  if (status == ILB_OUTCOME_CANCELLED)
    return ILB__CLS_NEUTRAL;
  if (status == ILB_OUTCOME_CONNECT_ERROR || status == ILB_OUTCOME_TIMEOUT ||
      status == ILB_OUTCOME_REFUSED)
    return ILB__CLS_GATEWAY;
  if (http >= 500 || (status == ILB_OUTCOME_HTTP_ERROR && http == 0))
    return ILB__CLS_ERROR;
  return ILB__CLS_SUCCESS;
}
void ilb__passive_error(struct ilb_pool *p, struct ilb__slot *s, int gateway);
void ilb__passive_half_success(struct ilb_pool *p, struct ilb__slot *s);
/* Reserve an ejection (max percentage) and set the bits; 1 if ejected. */
int ilb__eject(struct ilb_pool *p, struct ilb__slot *s, int32_t reason,
               uint64_t now);
/* writer: the outlier interval analysis and the breaker half-window. */
void ilb__outlier_interval(struct ilb_pool *p, uint64_t now);
void ilb__outlier_marks(struct ilb_pool *p); /* start an interval */
void ilb__breaker_half(struct ilb_pool *p);
void ilb__breaker_reset(struct ilb_pool *p); /* the window starts now */

/* retry.c: record the pick count of this second (ilb_next_due). */
void ilb__budget_sample(struct ilb_pool *p, uint64_t now);
/* retry.c: retry_after_ns for a failed pick (lock-free). */
uint64_t ilb__retry_after(struct ilb_pool *p, const struct ilb__snap *s,
                          uint64_t r);

/* options.c */
int ilb__opt_validate(int32_t option, int64_t value);
int ilb__opt_store(struct ilb_pool *pool, int32_t option, int64_t value);
int ilb__opt_is_router(int32_t option); /* 1 for ILB_OPT_ROUTER_* */
void ilb__opt_init(struct ilb_pool *pool); /* every option to its default */

#endif
