/* Internal structures shared by src/core and src/policy. Not installed.
 * SPDX-License-Identifier: MIT */
#ifndef ILB_CORE_INTERNAL_H
#define ILB_CORE_INTERNAL_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
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
#else
#define ILB__LIKELY(x) (x)
#define ILB__UNLIKELY(x) (x)
#define ILB__PRINTF(a, b)
#endif

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

/* Hot per-replica counters. Stable address for the pool's lifetime; a slot
 * is reused for a new replica only after its old replica was removed, that
 * removal was published, and its in-flight count reached zero. */
struct ilb__slot {
  /* completed (low 32 bits) << 32 | in_flight: a completion is one
   * fetch_add of 2^32 - 1. in_flight never exceeds the ticket table size
   * (<= 2^24), so it never borrows from the completion bits. */
  alignas(ILB__CACHELINE) _Atomic uint64_t load;
  _Atomic uint64_t completed_hi; /* carries of the 32-bit completion count */
  _Atomic uint64_t failed;
  _Atomic uint32_t live;    /* 1 while in the pool, 0 once removed */
  _Atomic uint32_t down;    /* nonzero: unavailable, skipped by picks */
  uint32_t index;           /* own slot number */
  struct ilb__replica *rep; /* owned; writer-only */
  uint64_t dead_version;    /* snapshot version without it; writer-only */
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
  /* Total weight of the available candidates: set when built, then kept
   * up to date by ilb_replica_set_available (writer) without a rebuild. */
  _Atomic uint64_t avail_weight;
  int allow_over;
  /* hashing policies (options at build time) */
  int32_t no_key;
  uint32_t ring_vnodes;
  uint32_t maglev_m; /* 0 = auto */
  uint32_t balance_pct;
  const struct ilb__policy *policy;
  void *pstate;                   /* policy's precomputed tables */
  struct ilb__snap *retired_next; /* kept until ilb_pool_free, rarely */
  struct ilb__cand *cand;         /* n entries, registry order */
};

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
#define ILB__T_SLOT(s) ((uint32_t)((s)&0x1fffffffu))
/* In an OUT entry: the pick was counted in ilb_pool.hash_in_flight. */
#define ILB__T_COUNTED (UINT64_C(1) << 29)
_Static_assert(ILB__SLOTS_MAX <= 0x1fffffffu, "slot numbers fit the entry");
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
  alignas(ILB__CACHELINE) _Atomic uint64_t e[];
};

/* ---- pool --------------------------------------------------------------- */

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

  /* Requests in flight placed by a policy that counts them (chwbl): one
   * shared counter, touched only by such picks and their completions. */
  alignas(ILB__CACHELINE) _Atomic uint64_t hash_in_flight;
  char hash_pad[ILB__CACHELINE - sizeof(uint64_t)];

  /* writer side, under mutex */
  pthread_mutex_t mu;
  uint32_t batch_depth;
  int dirty;                  /* registry differs from snapshot */
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

/* snapshot.c: build from the registry and publish; frees the old snapshot
 * once no reader can hold it. Mutex held. ILB_ENOMEM leaves all unchanged. */
int ilb__publish(struct ilb_pool *p);
void ilb__snap_free(struct ilb_pool *p, struct ilb__snap *s);
/* Wait until no pick that could have loaded an older snapshot is running.
 * 0, or -1 when that cannot be known (see ilb__writer_barrier). */
int ilb__wait_readers(struct ilb_pool *p);

/* options.c */
int ilb__opt_validate(int32_t option, int64_t value);
int ilb__opt_store(struct ilb_pool *pool, int32_t option, int64_t value);
void ilb__opt_init(struct ilb_pool *pool); /* every option to its default */

#endif
