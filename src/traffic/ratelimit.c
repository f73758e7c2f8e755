/* One rate limit of a router (traffic.h): GCRA per key.
 *
 * GCRA (the generic cell rate algorithm, ITU-T I.371): a key's whole
 * state is its theoretical arrival time TAT. With the emission interval
 * T = period / rate and the tolerance tau = T * (burst - 1), a request at
 * `now` is allowed when TAT - tau <= now, and then TAT = max(TAT, now) +
 * T; else it is refused, to be retried after TAT - tau - now. A key whose
 * TAT <= now has its full burst again, so a fresh key is TAT 0 and any
 * TAT <= now means the same thing from now on.
 *
 * T in integer ns: period_ns / rate rounded up (and at least 1 ns), so a
 * limit never lets more than `rate` requests through a period. It is exact
 * when rate divides period_ns; otherwise each request costs less than 1 ns
 * more than its exact share (rate 3 per 1000 ms: T = 333333334 ns, three
 * requests 2 ns longer than a second).
 *
 * Table: a power of two of buckets, each a lock word and WAYS (7) entries
 * of a key fingerprint and a TAT word, laid out by field: the lock word
 * and the seven fingerprints fill the first cache line, the TAT words the
 * second. A key lives only in its bucket (no probing).
 *
 * Memory: 128 bytes per bucket of 7 keys (18.3 bytes per key held), plus a
 * 128-byte header and the two strings, in one cache-line aligned block.
 * Buckets are ceil(keys / 7) rounded up to a power of two: 18.3 to 36.6
 * bytes per key asked for, 32 at the default 65536 (16384 buckets, 2 MiB).
 *
 * Fingerprint: ilb__mix64(h) | 1 (0 marks an empty way). The bucket index
 * is the low bits of the same mix, bit 0 included, so two keys that differ
 * only in bit 0 never share a bucket -- except in a one-bucket table.
 *
 * Concurrency. A take or give-back of a key in the table is lock-free
 * and never waits: it reads the key's entry (its fingerprint, its TAT
 * word, its fingerprint again) and then changes the TAT word with one
 * CAS, read again when another taker won. Only a new key takes the
 * bucket's lock word (one strong CAS from the even value it read before
 * looking, so no key -- this one included -- went in since: no key is
 * ever in a bucket twice), puts itself in and releases it at the next
 * even value. An insert hides the entry it replaces (fingerprint 0)
 * before it changes its TAT word and shows the new key after, so a
 * reader that sees the same fingerprint before and after reading a TAT
 * word has that key's word.
 *
 * Keyed TAT words: the word holds TAT ^ salt, salt a mix of the
 * fingerprint. A taker's CAS expects the word it read; without the salt,
 * an eviction between its read and its CAS could leave the new key with
 * the same word (same TAT), and the CAS would then charge the new key for
 * the old one's request. With it, that needs salt1 ^ salt2 == TAT1 ^ TAT2:
 * odds of 2^-64 per such race. The same holds for a reader that saw its
 * fingerprint, then another key's word, then its fingerprint again (two
 * whole replacements in between): its CAS fails, and a refusal reads the
 * word again before it is returned. An eviction replaces the TAT word with
 * a CAS from the value it judged, so `evicted` counts exactly the states
 * it dropped.
 *
 * A new key whose bucket is held by another thread (adding a key: a few
 * stores) waits up to BUSY_SPINS times; if it is still held -- the holder
 * was preempted -- the request is allowed without being recorded (a new
 * key has its full burst, so only the count is off: one more request than
 * the burst, per such request). That is not counted anywhere. A key in
 * the table meets it only while an insert is replacing it (hidden, so it
 * looks new), and then it is being evicted anyway.
 * SPDX-License-Identifier: MIT */
#include "traffic/traffic.h"

#define WAYS 7
/* Waits of 2, 4 .. 64 pauses (backing off, so the holder is not slowed by
 * spinners pulling its cache line), 63 in all: ~3800 pauses, 70-150 us,
 * far longer than a running holder needs for its few stores. */
#define BUSY_SPINS 64
#define LOCKED UINT64_C(1)

struct rbucket {
  alignas(ILB__CACHELINE) _Atomic uint64_t lock;
  _Atomic uint64_t fp[WAYS];
  _Atomic uint64_t tat[WAYS]; /* TAT ^ salt(fp); 0 in an empty way */
  uint64_t unused;
};
_Static_assert(sizeof(struct rbucket) == 128, "documented: 128 bytes");

struct ilb__rlimit {
  /* read by every take */
  alignas(ILB__CACHELINE) uint64_t mask; /* buckets - 1 */
  uint64_t t_ns;                         /* T */
  uint64_t tau_ns;                       /* T * (burst - 1), saturated */
  /* the configuration, for ilb__rl_same; strings after the buckets */
  uint64_t rate, period_ms, burst;
  const char *name;     /* a copy; NULL when cfg's was */
  const char *key_attr; /* a copy; NULL when cfg's was */
  /* written by refusals and evictions: a line of their own */
  alignas(ILB__CACHELINE) _Atomic uint64_t limited;
  _Atomic uint64_t evicted;
  struct rbucket b[];
};
_Static_assert(sizeof(struct ilb__rlimit) == 128, "documented: 128 bytes");

static inline uint64_t ld(_Atomic uint64_t *a) {
  return atomic_load_explicit(a, memory_order_relaxed);
}

static inline uint64_t salt_of(uint64_t fp) {
  return ilb__mix64(fp ^ ILB__GOLDEN);
}

static inline uint64_t sat_add(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ---- life cycle --------------------------------------------------------- */

static size_t str_size(const char *s) { return s ? strlen(s) + 1 : 0; }

static const char *str_copy(char **dst, const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  char *p = memcpy(*dst, s, n);
  *dst += n;
  return p;
}

int ilb__rl_new(struct ilb__rlimit **out, const struct ilb__alloc *a,
                const ilb_rate_limit *cfg, uint32_t keys) {
  *out = NULL;
  uint64_t need = ((uint64_t)(keys ? keys : 1) + WAYS - 1) / WAYS;
  uint64_t nb = 1;
  while (nb < need)
    nb <<= 1;
  size_t strings = str_size(cfg->name) + str_size(cfg->key_attr);
  if (nb > (SIZE_MAX - sizeof(struct ilb__rlimit) - strings) /
               sizeof(struct rbucket))
    return ILB_ENOMEM;
  size_t tables = sizeof(struct ilb__rlimit) +
                  (size_t)nb * sizeof(struct rbucket);
  struct ilb__rlimit *l = ilb__calloc_aligned(a, tables + strings);
  if (!l)
    return ILB_ENOMEM;
  l->mask = nb - 1;
  /* the caller validated these; out-of-range values still give a sane
   * limit rather than a division by zero */
  l->rate = cfg->rate;
  l->period_ms = cfg->period_ms;
  l->burst = cfg->burst;
  uint64_t rate = cfg->rate ? cfg->rate : 1;
  uint64_t burst = cfg->burst ? cfg->burst : 1;
  uint64_t period_ns = cfg->period_ms > UINT64_MAX / 1000000u
                           ? UINT64_MAX
                           : cfg->period_ms * 1000000u;
  uint64_t t = period_ns / rate + (period_ns % rate != 0); /* rounded up */
  l->t_ns = t ? t : 1;
  l->tau_ns = burst - 1 > UINT64_MAX / l->t_ns ? UINT64_MAX
                                                : l->t_ns * (burst - 1);
  char *s = (char *)l + tables;
  l->name = str_copy(&s, cfg->name);
  l->key_attr = str_copy(&s, cfg->key_attr);
  *out = l;
  return 0;
}

void ilb__rl_free(struct ilb__rlimit *l, const struct ilb__alloc *a) {
  ilb__free_aligned(a, l);
}

static int same_str(const char *x, const char *y) {
  return x == y || (x && y && strcmp(x, y) == 0); /* NULL != "" */
}

int ilb__rl_same(const struct ilb__rlimit *l, const ilb_rate_limit *cfg) {
  return same_str(l->name, cfg->name) &&
         same_str(l->key_attr, cfg->key_attr) && l->rate == cfg->rate &&
         l->period_ms == cfg->period_ms && l->burst == cfg->burst;
}

uint64_t ilb__rl_limited(const struct ilb__rlimit *l) {
  return atomic_load_explicit(&((struct ilb__rlimit *)(uintptr_t)l)->limited,
                              memory_order_relaxed);
}

uint64_t ilb__rl_evicted(const struct ilb__rlimit *l) {
  return atomic_load_explicit(&((struct ilb__rlimit *)(uintptr_t)l)->evicted,
                              memory_order_relaxed);
}

/* ---- reading an entry --------------------------------------------------- */

/* Way of key fp in b, with its TAT word in *w_out; -1 when it is not
 * there. Lock-free, never waits: an entry being replaced shows fp 0 first
 * (see insert), so a TAT word read between two readings of fp that both
 * show fp is fp's (but for an ABA of two whole replacements in between:
 * then the word is another key's, and the CAS that follows, or a re-read
 * for a refusal, sees that it changed). */
static int find(struct rbucket *b, uint64_t fp, uint64_t *w_out) {
  for (int j = 0; j < WAYS; j++) {
    if (atomic_load_explicit(&b->fp[j], memory_order_acquire) != fp)
      continue;
    uint64_t w = ld(&b->tat[j]);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&b->fp[j], memory_order_acquire) != fp)
      return -2; /* replaced meanwhile: look again */
    *w_out = w;
    return j;
  }
  return -1;
}

/* ---- taking ------------------------------------------------------------- */

/* Put key fp in b (held, and fp not in it since the lock word's value
 * before) with the TAT of its first request at now. The way: an empty
 * one, else one whose key is full again (TAT <= now: forgetting it loses
 * nothing), else the one closest to full (the smallest TAT: counted as
 * evicted). A replaced entry is hidden (fp 0) before its TAT word changes,
 * for find; the word is replaced with a CAS from the value judged, since
 * takers of the old key may still CAS it. */
static void insert(struct ilb__rlimit *l, struct rbucket *b, uint64_t fp,
                   uint64_t now) {
  uint64_t nw = sat_add(now, l->t_ns) ^ salt_of(fp);
  for (;;) {
    int victim = -1, full = 0;
    uint64_t vw = 0, vfp = 0, tmin = UINT64_MAX;
    for (int j = 0; j < WAYS; j++) {
      uint64_t f = ld(&b->fp[j]);
      if (!f) { /* empty: no taker can reach its word */
        atomic_store_explicit(&b->tat[j], nw, memory_order_relaxed);
        atomic_store_explicit(&b->fp[j], fp, memory_order_release);
        return;
      }
      uint64_t w = ld(&b->tat[j]), tat = w ^ salt_of(f);
      if (victim < 0 || (!full && (tat <= now || tat < tmin))) {
        victim = j;
        vw = w;
        vfp = f;
        tmin = tat;
        full = tat <= now;
      }
    }
    atomic_store_explicit(&b->fp[victim], 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release); /* hidden before replaced */
    if (atomic_compare_exchange_strong_explicit(&b->tat[victim], &vw, nw,
                                                memory_order_relaxed,
                                                memory_order_relaxed)) {
      atomic_store_explicit(&b->fp[victim], fp, memory_order_release);
      if (!full)
        atomic_fetch_add_explicit(&l->evicted, 1, memory_order_relaxed);
      return;
    }
    /* a taker of that key came first: it stays, and we judge again */
    atomic_store_explicit(&b->fp[victim], vfp, memory_order_release);
  }
}

int ilb__rl_take(struct ilb__rlimit *l, uint64_t h, uint64_t now,
                 uint64_t *retry_after_ns) {
  uint64_t m = ilb__mix64(h), fp = m | 1, salt = salt_of(fp);
  struct rbucket *b = &l->b[m & l->mask];
  for (int spins = 0;;) {
    /* read before the entries: a new key goes in only if no key did
     * since (the lock word changes at every insert) */
    uint64_t v = atomic_load_explicit(&b->lock, memory_order_acquire);
    uint64_t w = 0;
    int way = find(b, fp, &w);
    if (way == -2)
      continue;
    if (way >= 0) {
      uint64_t tat = w ^ salt;
      if (tat > now && tat - now > l->tau_ns) {
        /* refused on the word read: still fp's? (the allowed path's CAS
         * checks this itself) */
        if (ld(&b->tat[way]) != w)
          continue;
        if (retry_after_ns)
          *retry_after_ns = tat - now - l->tau_ns;
        atomic_fetch_add_explicit(&l->limited, 1, memory_order_relaxed);
        return ILB_ERATELIMIT;
      }
      uint64_t nt = sat_add(tat > now ? tat : now, l->t_ns);
      if (atomic_compare_exchange_strong_explicit(&b->tat[way], &w,
                                                  nt ^ salt,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        return 0;
      continue; /* another taker (or an eviction) came first: read again */
    }
    /* A new key. It has its full burst (>= 1): this request is allowed
     * whether or not it can be recorded. */
    if (v & LOCKED) {
      if (++spins >= BUSY_SPINS)
        return 0; /* held by a preempted thread: allowed, not recorded */
      for (int k = 0; k < 1 << (spins < 6 ? spins : 6); k++)
        ilb__cpu_relax();
      continue;
    }
    if (!atomic_compare_exchange_strong_explicit(&b->lock, &v, v | LOCKED,
                                                 memory_order_acquire,
                                                 memory_order_relaxed))
      continue; /* a key went in since v: perhaps this one */
    atomic_thread_fence(memory_order_release);
    insert(l, b, fp, now);
    atomic_store_explicit(&b->lock, v + 2, memory_order_release);
    return 0;
  }
}

void ilb__rl_give_back(struct ilb__rlimit *l, uint64_t h, uint64_t now) {
  uint64_t m = ilb__mix64(h), fp = m | 1, salt = salt_of(fp);
  struct rbucket *b = &l->b[m & l->mask];
  for (;;) {
    uint64_t w = 0;
    int way = find(b, fp, &w);
    if (way == -2)
      continue;
    if (way < 0)
      return; /* evicted since: it has a fresh burst already */
    uint64_t tat = w ^ salt;
    /* TAT <= now: the key is full at now with or without the token */
    if (tat <= now)
      return;
    /* The take made TAT max(TAT0, t) + T: minus T is max(TAT0, t), the
     * same state as TAT0 from t on. */
    uint64_t nt = tat > l->t_ns ? tat - l->t_ns : 0;
    if (atomic_compare_exchange_strong_explicit(&b->tat[way], &w, nt ^ salt,
                                                memory_order_relaxed,
                                                memory_order_relaxed))
      return;
  }
}
