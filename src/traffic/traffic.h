/* Internal interfaces of src/traffic: the router (router.c), its session
 * table (sticky.c), its rate limits (ratelimit.c), the stats text
 * (stats.c) and the autoscaling signal (autoscale.c). Not installed.
 * SPDX-License-Identifier: MIT */
#ifndef ILB_TRAFFIC_TRAFFIC_H
#define ILB_TRAFFIC_TRAFFIC_H

#include "core/internal.h"

/* ---- tickets ------------------------------------------------------------ */

/* A pool in a router stamps its tickets with its tag (1..ILB_ROUTER_POOLS_MAX,
 * bits 25..31 of the low word; 0 outside routers); the router's pair
 * tickets carry ILB__TAG_PAIR. Entry indexes stay below 2^25. */
#define ILB__TAG_SHIFT 25
#define ILB__TAG_PAIR 127u
#define ILB__TAG_OF(t) ((uint32_t)((t) >> ILB__TAG_SHIFT) & 127u)
_Static_assert(ILB_ROUTER_POOLS_MAX < ILB__TAG_PAIR, "tags fit 7 bits");

/* ---- sticky.c: session -> replica, set-associative with LRU ------------- */

/* A table of `entries` sessions (buckets of ILB__STICKY_WAYS entries and a
 * lock word; a full bucket drops its least recently used entry: the one
 * expiring first, an unpinned one while there is one). Lookups are
 * lock-free (the bucket's sequence word); updates take the bucket with one
 * compare-and-swap and are skipped when another thread holds it, unless
 * `wait` (writers: ilb_router_pin). No allocation, lock or syscall but in
 * new/free and in a waiting put/del (sched_yield while the bucket stays
 * held). Memory: 128 bytes per bucket of 5, a power of two of buckets
 * (32 bytes per entry at 65536 entries; see sticky.c). */
#define ILB__STICKY_WAYS 5
struct ilb__sticky;

/* 0 or ILB_ENOMEM (*out NULL); entries >= 1 (0 is taken as 1; rounded up
 * to whole buckets, a power of two of them). One allocation. */
int ilb__sticky_new(struct ilb__sticky **out, const struct ilb__alloc *a,
                    uint32_t entries);
void ilb__sticky_free(struct ilb__sticky *t, const struct ilb__alloc *a);
/* 1 with *val_out (and *pinned_out, *expires_out when not NULL) when
 * session h is in the
 * table and has not expired at now (now < its expiry); else 0, also when
 * the bucket stayed held by a writer for a few reads. Lock-free. Any h,
 * 0 included. Also tells the table the time (for put: see sticky.c). */
int ilb__sticky_get(struct ilb__sticky *t, uint64_t h, uint64_t now,
                    uint64_t *val_out, int *pinned_out,
                    uint64_t *expires_out);
/* Insert or update session h: its value, expiry (host clock, ns; 0 stores
 * nothing, as a delete) and pin flag (as given: a renewal of a pinned
 * session passes 1 again). A new session takes an empty or expired entry
 * of its bucket (expired as of the latest time a lookup saw), else evicts
 * the unpinned entry expiring first, else the pinned one expiring first.
 * Returns 1 when stored, 0 when skipped (bucket busy, not wait). */
int ilb__sticky_put(struct ilb__sticky *t, uint64_t h, uint64_t val,
                    uint64_t expires, int pinned, int wait);
/* Forget session h (waits for its bucket). 1 when it was there (expired
 * or not). */
int ilb__sticky_del(struct ilb__sticky *t, uint64_t h);

/* ---- ratelimit.c: one rate limit (GCRA per key) -------------------------- */

struct ilb__rlimit;

/* A limit of cfg (validated by the caller: rate >= 1, period_ms >= 1,
 * burst >= 1) remembering `keys` keys (buckets of 7 keys and a lock word,
 * a power of two of buckets: 128 bytes per 7 keys, 32 bytes per key at
 * 65536 keys; see ratelimit.c). Keeps copies of cfg's name and key_attr.
 * One allocation. 0 or ILB_ENOMEM (*out NULL).
 * Emission interval T = period / rate in ns, rounded up when rate does not
 * divide the period (each request then costs < 1 ns too much; never more
 * than rate per period); tolerance tau = T * (burst - 1). */
int ilb__rl_new(struct ilb__rlimit **out, const struct ilb__alloc *a,
                const ilb_rate_limit *cfg, uint32_t keys);
void ilb__rl_free(struct ilb__rlimit *l, const struct ilb__alloc *a);
/* Take one token for key hash h at host time now (ns): 0, or
 * ILB_ERATELIMIT with *retry_after_ns = time until a token is available
 * (TAT - tau - now, exact), counted in limited.
 * Lock-free and exact per key: GCRA's theoretical arrival time is one
 * word, updated with compare-and-swap; a take of a key in the table
 * never waits. A key not in the table is added (holding its bucket for a
 * few stores) with a full burst, in place of an empty way, else of a key
 * full again at now, else of the key closest to full (counted in
 * evicted). When a new key's bucket stays held by another thread
 * (preempted while adding a key) for ~100 us, its request is allowed
 * and not recorded (fails open; not counted). No allocation or syscall. */
int ilb__rl_take(struct ilb__rlimit *l, uint64_t h, uint64_t now,
                 uint64_t *retry_after_ns);
/* Give back the token a successful ilb__rl_take(h) took (the request was
 * refused later): TAT -= T, which restores the key's state before the take
 * exactly (as seen from the take's time on); nothing when the key is full
 * at now anyway or was evicted since. Lock-free. */
void ilb__rl_give_back(struct ilb__rlimit *l, uint64_t h, uint64_t now);
/* 1 when l was made from the same name, key_attr (NULL, "" and a string
 * all differ), rate, period and burst. */
int ilb__rl_same(const struct ilb__rlimit *l, const ilb_rate_limit *cfg);
/* Counters (relaxed): requests refused; keys evicted while their bucket
 * was not full again. */
uint64_t ilb__rl_limited(const struct ilb__rlimit *l);
uint64_t ilb__rl_evicted(const struct ilb__rlimit *l);

/* ---- router.c, for stats.c ----------------------------------------------- */

/* Visit what a router holds, under its mutex. Each callback returns 0 to go
 * on or a negative ILB_E* to stop (returned by ilb__router_visit). */
struct ilb__rvisit {
  void *ctx;
  /* every pool ever added and still referenced (removed ones too) */
  int (*pool)(void *ctx, ilb_pool *pool, const char *model,
              const char *version, int32_t role, int active);
  /* every backend of every route of the current table */
  int (*route)(void *ctx, const char *route, const char *model,
               const char *version, uint64_t picks);
  /* every rate limit */
  int (*limit)(void *ctx, const char *name, uint64_t limited,
               uint64_t evicted);
  /* router-wide counters: "no_model", "sticky_hits", "sticky_moves",
   * "mirrored" */
  int (*counter)(void *ctx, const char *name, uint64_t value);
};
int ilb__router_visit(ilb_router *r, const struct ilb__rvisit *v);

/* ---- autoscale.c --------------------------------------------------------- */

/* Free the pool's autoscaling history (ilb_pool_free). */
void ilb__autoscale_free(struct ilb_pool *p);

#endif
