/* The router's session table (traffic.h): session hash -> value, expiry
 * and pin, set-associative with LRU eviction.
 *
 * Table: a power of two of buckets, each a lock word and ILB__STICKY_WAYS
 * (5) entries of a session hash, a value and an expiry, laid out by field
 * so that a miss reads one cache line (the lock word and the five
 * hashes). A session lives only in its bucket (ilb__mix64 of its hash,
 * low bits): no probing, so the table never holds more than its capacity.
 *
 * Memory: 128 bytes per bucket of 5 entries (25.6 bytes per entry held),
 * plus a 128-byte header, in one cache-line aligned block. Buckets are
 * ceil(entries / 5) rounded up to a power of two, so 25.6 to 51.2 bytes
 * per entry asked for; 32 at the default 65536 (16384 buckets, 2 MiB).
 *
 * Expiry: an entry is live while now < expires. expires == 0 is the empty
 * marker (such an entry could never be live), so every session hash,
 * 0 included, is a valid key and an entry costs no occupied flag.
 *
 * Lock word: a sequence lock that also holds the pin flags, so a reader
 * gets an entry and its pin from one consistent read:
 *   bit 0      held by a writer
 *   bits 1..5  pin flag of way 0..4
 *   bits 6..63 sequence, + 1 at every release that changed something
 * A writer takes it with one strong CAS from even to odd, writes with
 * relaxed stores and releases it with the next sequence and the new pins;
 * a reader keeps what it read only when the word did not change (up to
 * READ_TRIES tries). Every field is an atomic: a torn read is a retry or
 * a miss, never undefined behaviour.
 *
 * Time in put: put has no `now`, yet it should reuse an expired entry
 * before it evicts a live one (a pin included). Lookups leave the time
 * they saw in the table's clock hint (a store at most once per
 * HINT_STEP_NS of host time, on a line of its own), and put takes an
 * entry whose expiry is <= the hint as expired. The hint is never ahead
 * of the latest time a lookup was given, so with a monotonic host clock a
 * live entry is never taken for expired; an entry that expired since the
 * hint moved (up to 1 ms, more while no lookup comes) waits for its turn
 * in LRU order, unless it is a pin.
 * SPDX-License-Identifier: MIT */
#include <sched.h>

#include "traffic/traffic.h"

#define WAYS ILB__STICKY_WAYS
#define READ_TRIES 4
#define WAIT_SPINS 64                   /* then sched_yield (wait only) */
#define HINT_STEP_NS UINT64_C(1000000) /* 1 ms */
#define LOCKED UINT64_C(1)
#define PIN_SHIFT 1
#define PIN_MASK ((UINT64_C(1) << WAYS) - 1)
#define SEQ_SHIFT (PIN_SHIFT + WAYS)
_Static_assert(SEQ_SHIFT < 16, "a sequence of at least 48 bits");

struct sbucket {
  alignas(ILB__CACHELINE) _Atomic uint64_t lock;
  _Atomic uint64_t key[WAYS];
  _Atomic uint64_t val[WAYS];
  _Atomic uint64_t exp[WAYS];
};
_Static_assert(sizeof(struct sbucket) == 128, "documented: 128 bytes");

struct ilb__sticky {
  alignas(ILB__CACHELINE) uint64_t mask; /* buckets - 1; read-only */
  /* written by lookups: apart from what every lookup reads */
  alignas(ILB__CACHELINE) _Atomic uint64_t clock_hint;
  struct sbucket b[];
};
_Static_assert(sizeof(struct ilb__sticky) == 128, "documented: 128 bytes");

static inline uint64_t ld(_Atomic uint64_t *a) {
  return atomic_load_explicit(a, memory_order_relaxed);
}
static inline void st(_Atomic uint64_t *a, uint64_t v) {
  atomic_store_explicit(a, v, memory_order_relaxed);
}

/* Mixed: the router's hashes are XXH64 values, but a host-made hash (a
 * small integer) must spread as well. */
static inline struct sbucket *bucket_of(struct ilb__sticky *t, uint64_t h) {
  return &t->b[ilb__mix64(h) & t->mask];
}

/* Take b's lock word: one try (try_only) or until it is free. *v_out gets
 * the (even) value it had. */
static int bucket_lock(struct sbucket *b, int try_only, uint64_t *v_out) {
  for (unsigned spins = 0;; spins++) {
    uint64_t v = atomic_load_explicit(&b->lock, memory_order_relaxed);
    /* strong: a single try must not fail spuriously (LL/SC) */
    if (!(v & LOCKED) &&
        atomic_compare_exchange_strong_explicit(&b->lock, &v, v | LOCKED,
                                                memory_order_acquire,
                                                memory_order_relaxed)) {
      /* the odd value is visible before any store of ours */
      atomic_thread_fence(memory_order_release);
      *v_out = v;
      return 1;
    }
    if (try_only)
      return 0;
    if (spins > WAIT_SPINS)
      sched_yield();
    else
      ilb__cpu_relax();
  }
}

/* Release with pins; the sequence moves on so readers drop what they
 * read while it was held. */
static inline void bucket_unlock(struct sbucket *b, uint64_t v,
                                 uint64_t pins) {
  uint64_t seq = (v >> SEQ_SHIFT) + 1;
  atomic_store_explicit(&b->lock, seq << SEQ_SHIFT | pins << PIN_SHIFT,
                        memory_order_release);
}

int ilb__sticky_new(struct ilb__sticky **out, const struct ilb__alloc *a,
                    uint32_t entries) {
  *out = NULL;
  uint64_t need = ((uint64_t)(entries ? entries : 1) + WAYS - 1) / WAYS;
  uint64_t nb = 1;
  while (nb < need)
    nb <<= 1;
  if (nb > (SIZE_MAX - sizeof(struct ilb__sticky)) / sizeof(struct sbucket))
    return ILB_ENOMEM;
  struct ilb__sticky *t = ilb__calloc_aligned(
      a, sizeof(*t) + (size_t)nb * sizeof(struct sbucket));
  if (!t)
    return ILB_ENOMEM;
  t->mask = nb - 1; /* all zero: every entry empty, every word unlocked */
  *out = t;
  return 0;
}

void ilb__sticky_free(struct ilb__sticky *t, const struct ilb__alloc *a) {
  ilb__free_aligned(a, t);
}

int ilb__sticky_get(struct ilb__sticky *t, uint64_t h, uint64_t now,
                    uint64_t *val_out, int *pinned_out,
                    uint64_t *expires_out) {
  /* the hint for put (see the top): one load, a store once per step */
  uint64_t hint = ld(&t->clock_hint);
  if (now > hint && now - hint >= HINT_STEP_NS)
    atomic_compare_exchange_strong_explicit(&t->clock_hint, &hint, now,
                                            memory_order_relaxed,
                                            memory_order_relaxed);

  struct sbucket *b = bucket_of(t, h);
  for (int tries = 0; tries < READ_TRIES; tries++) {
    uint64_t v = atomic_load_explicit(&b->lock, memory_order_acquire);
    if (v & LOCKED) {
      ilb__cpu_relax();
      continue;
    }
    int way = -1;
    uint64_t e = 0, val = 0;
    for (int j = 0; j < WAYS; j++)
      if (ld(&b->key[j]) == h && (e = ld(&b->exp[j])) != 0) {
        way = j; /* one live or expired entry per session at most */
        val = ld(&b->val[j]);
        break;
      }
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&b->lock, memory_order_relaxed) != v)
      continue;
    if (way < 0 || now >= e)
      return 0;
    *val_out = val;
    if (pinned_out)
      *pinned_out = (int)(v >> (PIN_SHIFT + way) & 1);
    if (expires_out)
      *expires_out = e;
    return 1;
  }
  return 0; /* the bucket stayed busy: a miss, the caller picks afresh */
}

/* The way put() writes h into (bucket held, pins of its word): h's own
 * entry, else an empty or expired one, else the unpinned entry expiring
 * first (the least recently used: an expiry is last use + TTL), else,
 * when all are pinned, the pinned one expiring first. */
static int way_for(struct sbucket *b, uint64_t h, uint64_t pins,
                   uint64_t hint) {
  for (int j = 0; j < WAYS; j++)
    if (ld(&b->key[j]) == h && ld(&b->exp[j]) != 0)
      return j;
  for (int j = 0; j < WAYS; j++)
    if (ld(&b->exp[j]) <= hint) /* empty (0) or expired */
      return j;
  int best = 0;
  uint64_t best_pin = 2, best_exp = 0;
  for (int j = 0; j < WAYS; j++) {
    uint64_t pin = pins >> j & 1, e = ld(&b->exp[j]);
    if (pin < best_pin || (pin == best_pin && e < best_exp)) {
      best = j;
      best_pin = pin;
      best_exp = e;
    }
  }
  return best;
}

int ilb__sticky_put(struct ilb__sticky *t, uint64_t h, uint64_t val,
                    uint64_t expires, int pinned, int wait) {
  struct sbucket *b = bucket_of(t, h);
  uint64_t v;
  if (!bucket_lock(b, !wait, &v))
    return 0;
  uint64_t pins = v >> PIN_SHIFT & PIN_MASK;
  int w = way_for(b, h, pins, ld(&t->clock_hint));
  st(&b->key[w], expires ? h : 0); /* expires 0: stored as empty */
  st(&b->val[w], val);
  st(&b->exp[w], expires);
  if (pinned && expires)
    pins |= UINT64_C(1) << w;
  else
    pins &= ~(UINT64_C(1) << w);
  bucket_unlock(b, v, pins);
  return 1;
}

int ilb__sticky_del(struct ilb__sticky *t, uint64_t h) {
  struct sbucket *b = bucket_of(t, h);
  uint64_t v;
  bucket_lock(b, 0, &v);
  for (int j = 0; j < WAYS; j++)
    if (ld(&b->key[j]) == h && ld(&b->exp[j]) != 0) {
      st(&b->key[j], 0);
      st(&b->val[j], 0);
      st(&b->exp[j], 0);
      bucket_unlock(b, v, (v >> PIN_SHIFT & PIN_MASK) & ~(UINT64_C(1) << j));
      return 1;
    }
  /* nothing changed: readers that overlapped keep what they read */
  atomic_store_explicit(&b->lock, v, memory_order_release);
  return 0;
}
