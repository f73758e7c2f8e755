/* The prefix index (see prefix.h): lookups and records on the pick path,
 * the KV events and statistics of the public API, and the index's life
 * cycle on the writer side.
 * SPDX-License-Identifier: MIT */
#include <sched.h>

#include "policy/prefix.h"

/* ---- the lock word ------------------------------------------------------ */

/* Take bucket b's lock word: one try (try_only) or until it is free. */
static int bucket_lock(struct ilb__pbucket *b, int try_only, uint64_t *v_out) {
  for (unsigned spins = 0;; spins++) {
    uint64_t v = atomic_load_explicit(&b->lock, memory_order_relaxed);
    /* strong: a single try must not fail spuriously (LL/SC) */
    if (!(v & 1) &&
        atomic_compare_exchange_strong_explicit(&b->lock, &v, v + 1,
                                                memory_order_acquire,
                                                memory_order_relaxed)) {
      /* the odd value is visible before any store of ours */
      atomic_thread_fence(memory_order_release);
      *v_out = v;
      return 1;
    }
    if (try_only)
      return 0;
    if (spins > 64)
      sched_yield();
    else
      ilb__cpu_relax();
  }
}

static inline void bucket_unlock(struct ilb__pbucket *b, uint64_t v) {
  atomic_store_explicit(&b->lock, v + 2, memory_order_release);
}

static inline uint64_t ld(_Atomic uint64_t *a) {
  return atomic_load_explicit(a, memory_order_relaxed);
}
static inline void st(_Atomic uint64_t *a, uint64_t v) {
  atomic_store_explicit(a, v, memory_order_relaxed);
}

static inline struct ilb__pbucket *bucket_of(const struct ilb__pindex *x,
                                             uint64_t key) {
  return &x->b[key & x->mask];
}

/* ---- reading ------------------------------------------------------------ */

uint32_t ilb__pfx_lookup(const struct ilb_pool *p, const struct ilb__pindex *x,
                         uint64_t key, uint32_t out[ILB_PREFIX_HOLDERS]) {
  struct ilb__pbucket *b = bucket_of(x, key);
  for (int tries = 0; tries < ILB__PFX_READ_TRIES; tries++) {
    uint64_t v = atomic_load_explicit(&b->lock, memory_order_acquire);
    if (v & 1) {
      ilb__cpu_relax();
      continue;
    }
    int found = -1;
    for (int j = 0; j < ILB__PFX_WAYS; j++)
      if (ld(&b->key[j]) == key) {
        found = j;
        break;
      }
    uint64_t w[ILB_PREFIX_HOLDERS] = {0};
    if (found >= 0)
      for (int h = 0; h < ILB_PREFIX_HOLDERS; h++)
        w[h] = ld(&b->hold[found][h]);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&b->lock, memory_order_relaxed) != v)
      continue;
    uint32_t n = 0;
    for (int h = 0; h < ILB_PREFIX_HOLDERS; h++)
      if (w[h] && ilb__pfx_live(p, w[h]))
        out[n++] = ilb__pfx_slot(w[h]);
    return n;
  }
  return 0;
}

/* Blocks a holder word has left before it expires; -1 when dead or 0. */
static inline int64_t life(const struct ilb_pool *p, uint64_t w) {
  if (!w)
    return -1;
  const struct ilb__slot *s =
      ilb__slot_at((struct ilb_pool *)(uintptr_t)p, ilb__pfx_slot(w));
  uint64_t age = (atomic_load_explicit(&s->pfx_head, memory_order_relaxed) -
                  w) & ILB__PFX_POS_MASK;
  uint32_t cap = atomic_load_explicit(&s->pfx_cap, memory_order_relaxed);
  return age != 0 && age <= cap ? (int64_t)(cap - age) : -1;
}

static inline void prefetch(const void *p) {
#if defined(__GNUC__)
  __builtin_prefetch(p, 1);
#else
  (void)p;
#endif
}

/* The two ways put() weighs for eviction when a bucket is full. */
static inline void victims(uint64_t key, int cand[2]) {
  uint32_t r = (uint32_t)(key >> 32);
  cand[0] = (int)(r % ILB__PFX_WAYS);
  cand[1] = (int)((r / ILB__PFX_WAYS) % (ILB__PFX_WAYS - 1));
  cand[1] += cand[1] >= cand[0];
}

void ilb__pfx_warm(const struct ilb__pindex *x, const uint64_t *keys,
                   uint32_t n) {
  for (uint32_t i = 0; i < n; i++)
    prefetch(bucket_of(x, keys[i]));
  for (uint32_t i = 0; i < n; i++) {
    uint64_t key = keys[i];
    struct ilb__pbucket *b = bucket_of(x, key);
    int way = -1, empty = -1;
    for (int j = 0; j < ILB__PFX_WAYS; j++) {
      uint64_t k = ld(&b->key[j]);
      if (k == key) {
        way = j;
        break;
      }
      if (!k && empty < 0)
        empty = j;
    }
    if (way < 0)
      way = empty;
    if (way >= 0) {
      prefetch(b->hold[way]);
    } else { /* full: put() reads the first holder of every way (for a
                dead one), then two ways' holders: all four lines */
      for (int j = 0; j < ILB__PFX_WAYS; j += 2)
        prefetch(b->hold[j]);
    }
  }
}

/* ---- writing (bucket locked) -------------------------------------------- */

/* Make word w (slot's new record) a holder of key. Returns 1 when a live
 * entry was evicted to make room, 0 when not, -1 when nothing was written
 * (refresh_cap: only an existing record of slot's still live at w's
 * reservation -- its age from w below refresh_cap + the reservation's
 * size -- is moved; 0: any record is made). */
static int put(const struct ilb_pool *p, struct ilb__pbucket *b, uint64_t key,
               uint64_t w, uint64_t refresh_cap) {
  int refresh_only = refresh_cap != 0;
  uint32_t slot = ilb__pfx_slot(w);
  int way = -1;
  for (int j = 0; j < ILB__PFX_WAYS; j++)
    if (ld(&b->key[j]) == key) {
      way = j;
      break;
    }
  if (way >= 0) {
    /* its own record, else a free or dead holder, else the one that
     * would expire first */
    int h_own = -1, h_free = -1, h_min = 0;
    int64_t lmin = INT64_MAX;
    for (int h = 0; h < ILB_PREFIX_HOLDERS; h++) {
      uint64_t o = ld(&b->hold[way][h]);
      if (o && ilb__pfx_slot(o) == slot) {
        /* a forget (a jump of the head) since pass 1: it stays dead */
        if (refresh_only && ((w - o) & ILB__PFX_POS_MASK) > refresh_cap)
          return -1;
        h_own = h;
        break;
      }
      int64_t l = life(p, o);
      if (l < 0) {
        if (h_free < 0)
          h_free = h;
      } else if (l < lmin) {
        lmin = l;
        h_min = h;
      }
    }
    if (h_own < 0 && refresh_only)
      return -1;
    st(&b->hold[way][h_own >= 0 ? h_own : h_free >= 0 ? h_free : h_min], w);
    return 0;
  }
  if (refresh_only)
    return -1;
  /* a new entry: a free way, else a dead one (every holder expired: one
   * holder check for most live ones), else of two ways drawn from the key
   * the one whose longest-lived holder expires first (all seven would
   * cost 28 holder checks) */
  int victim = -1, evicted = 0;
  for (int j = 0; j < ILB__PFX_WAYS && victim < 0; j++)
    if (ld(&b->key[j]) == 0)
      victim = j;
  for (int j = 0; j < ILB__PFX_WAYS && victim < 0; j++) {
    int alive = 0;
    for (int h = 0; h < ILB_PREFIX_HOLDERS && !alive; h++)
      alive = life(p, ld(&b->hold[j][h])) >= 0;
    if (!alive)
      victim = j;
  }
  if (victim < 0) {
    int cand[2];
    victims(key, cand);
    int64_t lmin = INT64_MAX;
    for (int c = 0; c < 2; c++) {
      int64_t l = -1;
      for (int h = 0; h < ILB_PREFIX_HOLDERS; h++) {
        int64_t lh = life(p, ld(&b->hold[cand[c]][h]));
        if (lh > l)
          l = lh;
      }
      if (l < lmin) {
        lmin = l;
        victim = cand[c];
      }
    }
    evicted = lmin >= 0;
  }

  st(&b->key[victim], key);
  st(&b->hold[victim][0], w);
  for (int h = 1; h < ILB_PREFIX_HOLDERS; h++)
    st(&b->hold[victim][h], 0);
  return evicted;
}

/* Drop slot's record of key, if any. */
static void drop(struct ilb__pbucket *b, uint64_t key, uint32_t slot) {
  for (int j = 0; j < ILB__PFX_WAYS; j++) {
    if (ld(&b->key[j]) != key)
      continue;
    for (int h = 0; h < ILB_PREFIX_HOLDERS; h++) {
      uint64_t o = ld(&b->hold[j][h]);
      if (o && ilb__pfx_slot(o) == slot)
        st(&b->hold[j][h], 0);
    }
    return;
  }
}

/* Does slot hold key: no (or a dead record), with a record older than
 * cap / 4 (worth moving to the front), or a younger one? Read without the
 * lock: a wrong answer costs one needless or one missing refresh. */
enum { HELD_NOT, HELD_OLD, HELD_YOUNG };
static int held(const struct ilb__pbucket *b, uint64_t key, uint32_t slot,
                uint64_t head, uint32_t cap) {
  for (int j = 0; j < ILB__PFX_WAYS; j++) {
    if (ld((_Atomic uint64_t *)&b->key[j]) != key)
      continue;
    for (int h = 0; h < ILB_PREFIX_HOLDERS; h++) {
      uint64_t o = ld((_Atomic uint64_t *)&b->hold[j][h]);
      if (o && ilb__pfx_slot(o) == slot) {
        uint64_t age = (head - o) & ILB__PFX_POS_MASK;
        if (age == 0 || age > cap)
          return HELD_NOT;
        return age <= cap / 4 ? HELD_YOUNG : HELD_OLD;
      }
    }
    return HELD_NOT;
  }
  return HELD_NOT;
}

void ilb__pfx_record(struct ilb_pool *p, struct ilb__pindex *x,
                     struct ilb__stripe *stp, uint32_t slot,
                     const uint64_t *keys, uint32_t n, uint32_t looked,
                     int how) {
  int try_only = how & ILB__PFX_TRY, refresh = how & ILB__PFX_REFRESH;
  struct ilb__slot *s = ilb__slot_at(p, slot);
  uint32_t cap = atomic_load_explicit(&s->pfx_cap, memory_order_relaxed);
  if (!cap || !n)
    return;
  if (n > ILB__HBUF)
    n = ILB__HBUF;
  /* Pass 1: which blocks need a record (not held, or held but older than
   * cap / 4; with refresh, only the latter), so that repeated hot prefixes
   * use up no capacity. */
  uint64_t need[ILB__HBUF / 64] = {0};
  uint32_t m = 0;
  uint64_t head = atomic_load_explicit(&s->pfx_head, memory_order_relaxed);
  if (looked > n)
    looked = n;
  if (!try_only) /* a KV event; a pick warmed them before matching */
    ilb__pfx_warm(x, keys, n);
  for (uint32_t i = 0; i < n; i++) {
    uint64_t key = keys[i];
    int st = i < looked ? held(bucket_of(x, key), key, slot, head, cap)
                        : HELD_NOT;
    if (refresh ? st == HELD_OLD : st != HELD_YOUNG) {
      need[i / 64] |= UINT64_C(1) << (i % 64);
      m++;
    }
  }
  if (!m)
    return;
  /* Pass 2: positions base .. base + m - 1, the last block first, so the
   * first block (the shared prefix) is the newest and expires last. */
  uint64_t pos = atomic_fetch_add_explicit(&s->pfx_head, m,
                                           memory_order_relaxed);
  uint64_t tag = ((uint64_t)slot + 1) << ILB__PFX_POS_BITS;
  uint64_t recorded = 0, dropped = 0, evicted = 0;
  for (uint32_t i = n; i-- > 0;) {
    if (!(need[i / 64] >> (i % 64) & 1))
      continue;
    uint64_t key = keys[i];
    struct ilb__pbucket *b = bucket_of(x, key);
    uint64_t v;
    uint64_t w = tag | (pos++ & ILB__PFX_POS_MASK);
    if (!bucket_lock(b, try_only, &v)) {
      dropped++;
      continue;
    }
    int rc = put(p, b, key, w, refresh ? (uint64_t)cap + m : 0);
    bucket_unlock(b, v);
    if (rc >= 0) {
      evicted += (uint64_t)rc;
      recorded++;
    }
  }
  if (stp) {
    ilb__bump(&stp->pfx_recorded, recorded);
    ilb__bump(&stp->pfx_dropped, dropped);
    ilb__bump(&stp->pfx_evicted, evicted);
  } else { /* a KV event: it waited for every bucket, dropped nothing */
    x->ev_recorded += recorded;
    x->ev_evicted += evicted;
  }
}

void ilb__pfx_forget(struct ilb_pool *p, uint32_t slot) {
  struct ilb__slot *s = ilb__slot_at(p, slot);
  uint64_t h = atomic_load_explicit(&s->pfx_head, memory_order_relaxed);
  if (h == s->pfx_forgot)
    return; /* nothing recorded since the last jump: no need to wrap */
  s->pfx_forgot = atomic_fetch_add_explicit(&s->pfx_head, ILB__PFX_JUMP,
                                            memory_order_relaxed) +
                  ILB__PFX_JUMP;
}

/* ---- writer side -------------------------------------------------------- */

static uint64_t block_tokens(const struct ilb_pool *p) {
  return (uint64_t)atomic_load(&p->opt_pfx[ILB_OPT_PREFIX_BLOCK_TOKENS -
                                           ILB__OPT_PFX_FIRST]);
}

void ilb__pfx_slot_cap(struct ilb_pool *p, struct ilb__slot *s) {
  uint64_t tokens =
      s->pfx_kv_tokens
          ? s->pfx_kv_tokens
          : (uint64_t)atomic_load(&p->opt_pfx[ILB_OPT_PREFIX_REPLICA_TOKENS -
                                              ILB__OPT_PFX_FIRST]);
  uint64_t c = tokens / block_tokens(p);
  if (c < 1)
    c = 1;
  if (c > ILB__PFX_CAP_MAX)
    c = ILB__PFX_CAP_MAX;
  uint32_t old = atomic_load_explicit(&s->pfx_cap, memory_order_relaxed);
  /* Growing by d: every record ages by d first, so the live ones keep
   * their remaining life and the expired ones stay expired (a larger
   * window would bring them back). */
  if (old && c > old)
    atomic_fetch_add_explicit(&s->pfx_head, c - old, memory_order_relaxed);
  atomic_store_explicit(&s->pfx_cap, (uint32_t)c, memory_order_relaxed);
}

void ilb__pfx_caps_all(struct ilb_pool *p) {
  for (uint32_t i = 0; i < p->n_reps; i++)
    ilb__pfx_slot_cap(p, ilb__slot_at(p, p->reps[i]->slot));
}

void ilb__pfx_telemetry(struct ilb_pool *p, struct ilb__replica *r) {
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  const int Q = ILB_SIGNAL_REQUESTS_WAITING, BS = ILB_SIGNAL_KV_BLOCK_SIZE,
            BT = ILB_SIGNAL_KV_BLOCKS_TOTAL;
  if (s->tm_present & ILB_SIGNAL_BIT(Q)) {
    uint64_t age = (uint64_t)atomic_load(&p->opt_tm_max_age_ms) * 1000000u;
    uint64_t ts = s->tm_ts[Q];
    double q = s->tm_val[Q];
    atomic_store_explicit(&s->pfx_queue,
                          q < 4e9 ? (uint32_t)q : UINT32_MAX,
                          memory_order_relaxed);
    atomic_store_explicit(&s->pfx_q_until,
                          ts > UINT64_MAX - age ? UINT64_MAX : ts + age,
                          memory_order_relaxed);
  }
  uint64_t both = ILB_SIGNAL_BIT(BS) | ILB_SIGNAL_BIT(BT);
  if ((s->tm_present & both) == both) {
    double t = s->tm_val[BS] * s->tm_val[BT];
    uint64_t tokens = t >= 1.0 && t < 1e18 ? (uint64_t)t : 0;
    if (tokens && tokens != s->pfx_kv_tokens) {
      s->pfx_kv_tokens = tokens;
      ilb__pfx_slot_cap(p, s);
    }
  }
}

static uint64_t buckets_for(uint64_t entries) {
  uint64_t need = (entries + ILB__PFX_WAYS - 1) / ILB__PFX_WAYS, n = 1;
  while (n < need)
    n <<= 1;
  return n;
}

void ilb__pfx_free(struct ilb_pool *p, struct ilb__pindex *x) {
  if (!x)
    return;
  ilb__free_aligned(&p->a, x->b);
  ilb__free(&p->a, x);
}

int ilb__pfx_prepare(struct ilb_pool *p, struct ilb__snap *s,
                     struct ilb__pindex **old_out) {
  /* Called last before publishing, so after a successful allocation
   * nothing can fail: forgetting and resetting are safe. */
  *old_out = NULL;
  struct ilb__pindex *x = p->pidx;
  if (s->policy->id != ILB_POLICY_PREFIX) {
    *old_out = x; /* not needed any more */
    p->pidx = NULL;
    s->pidx = NULL;
    return 0;
  }
  uint64_t want = (uint64_t)atomic_load(
      &p->opt_pfx[ILB_OPT_PREFIX_TABLE_BLOCKS - ILB__OPT_PFX_FIRST]);
  if (!x || x->table_opt != want) {
    struct ilb__pindex *nx = ilb__calloc(&p->a, 1, sizeof(*nx));
    uint64_t nb = buckets_for(want);
    if (nx)
      nx->b = ilb__calloc_aligned(&p->a, nb * sizeof(struct ilb__pbucket));
    if (!nx || !nx->b) {
      ilb__free(&p->a, nx);
      return ILB_ENOMEM;
    }
    nx->mask = nb - 1;
    nx->table_opt = want;
    /* the new index is empty: what the old one knew is forgotten, and
     * with it the statistics */
    for (uint32_t i = 0; i < ILB__STRIPES; i++) {
      struct ilb__stripe *t = &p->stripes[i];
      atomic_store(&t->pfx_lookups, 0);
      atomic_store(&t->pfx_blocks, 0);
      atomic_store(&t->pfx_matched, 0);
      atomic_store(&t->pfx_recorded, 0);
      atomic_store(&t->pfx_dropped, 0);
      atomic_store(&t->pfx_evicted, 0);
    }
    for (uint32_t i = 0; i < p->n_reps; i++) /* (the new table is empty) */
      ilb__pfx_slot_cap(p, ilb__slot_at(p, p->reps[i]->slot));
    *old_out = x;
    p->pidx = x = nx;
  }
  s->pidx = x;
  return 0;
}

/* ---- public API --------------------------------------------------------- */

int ilb_kv_event_init(ilb_kv_event *ev) {
  if (!ev)
    return ILB_EINVAL;
  memset(ev, 0, sizeof(*ev));
  ev->struct_size = sizeof(*ev);
  return 0;
}

int ilb_replica_kv_event(ilb_pool *p, const char *id, const ilb_kv_event *ev) {
  if (!p || !id || !ev)
    return ILB_EINVAL;
  int rc = ilb__check_struct_in(ev, ev->struct_size, sizeof(*ev),
                                sizeof(*ev));
  if (rc)
    return rc;
  if (ev->type < ILB_KV_STORED || ev->type > ILB_KV_CLEARED ||
      (ev->flags & ~ILB_KV_RESTART) || (ev->n_blocks && !ev->block_hashes))
    return ILB_EINVAL;
  struct ilb__replica *r;
  if ((rc = ilb__enter_find(p, id, &r)))
    return rc;
  struct ilb__pindex *x = p->pidx;
  if (!x)
    return ilb__writer_leave(p, ILB_EINVAL); /* policy is not prefix */
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  if (ev->flags & ILB_KV_RESTART) {
    ilb__pfx_forget(p, r->slot);
    s->pfx_seq = ev->seq;
  } else if (ev->seq) {
    if (ev->seq < s->pfx_seq) {
      x->stale_events++;
      return ilb__writer_leave(p, ILB_ESTALE);
    }
    s->pfx_seq = ev->seq;
  }
  x->events++;
  switch (ev->type) {
  case ILB_KV_STORED:
    /* in chunks, the last first: the first blocks get the newest
     * positions, as a pick's do (a record already young enough stays) */
    for (size_t end = ev->n_blocks; end > 0;) {
      uint64_t keys[ILB__HBUF];
      size_t i = end > ILB__HBUF ? end - ILB__HBUF : 0;
      uint32_t nk = (uint32_t)(end - i);
      for (uint32_t j = 0; j < nk; j++)
        keys[j] = ilb__pfx_key(ev->block_hashes[i + j]);
      ilb__pfx_record(p, x, NULL, r->slot, keys, nk, nk, 0);
      end = i;
    }
    break;
  case ILB_KV_REMOVED:
    for (size_t i = 0; i < ev->n_blocks; i++) {
      uint64_t key = ilb__pfx_key(ev->block_hashes[i]), v;
      struct ilb__pbucket *b = bucket_of(x, key);
      bucket_lock(b, 0, &v);
      drop(b, key, r->slot);
      bucket_unlock(b, v);
    }
    break;
  default: /* ILB_KV_CLEARED */
    ilb__pfx_forget(p, r->slot);
    break;
  }
  return ilb__writer_leave(p, 0);
}

#define STATS_MIN offsetof(ilb_prefix_stats, entries)

int ilb_pool_prefix_stats(ilb_prefix_stats *out, ilb_pool *p) {
  if (!out || !p)
    return ILB_EINVAL;
  if (out->struct_size < STATS_MIN + sizeof(uint64_t))
    return ILB_ESIZE;
  int rc = ilb__writer_enter(p);
  if (rc)
    return rc;
  struct ilb__pindex *x = p->pidx;
  if (!x)
    return ilb__writer_leave(p, ILB_EINVAL);
  ilb_prefix_stats v;
  memset(&v, 0, sizeof(v));
  v.struct_size = sizeof(v);
  for (uint64_t i = 0; i <= x->mask; i++)
    for (int j = 0; j < ILB__PFX_WAYS; j++) {
      if (!ld(&x->b[i].key[j]))
        continue;
      for (int h = 0; h < ILB_PREFIX_HOLDERS; h++)
        if (life(p, ld(&x->b[i].hold[j][h])) >= 0) {
          v.entries++;
          break;
        }
    }
  v.capacity = (x->mask + 1) * ILB__PFX_WAYS;
  v.memory_bytes =
      (x->mask + 1) * sizeof(struct ilb__pbucket) + 64; /* documented */
  for (uint32_t i = 0; i < ILB__STRIPES; i++) {
    struct ilb__stripe *t = &p->stripes[i];
    v.lookups += atomic_load(&t->pfx_lookups);
    v.blocks += atomic_load(&t->pfx_blocks);
    v.matched_blocks += atomic_load(&t->pfx_matched);
    v.recorded += atomic_load(&t->pfx_recorded);
    v.dropped += atomic_load(&t->pfx_dropped);
    v.evicted += atomic_load(&t->pfx_evicted);
  }
  v.recorded += x->ev_recorded;
  v.evicted += x->ev_evicted;
  v.events = x->events;
  v.stale_events = x->stale_events;
  size_t n = out->struct_size < sizeof(v) ? out->struct_size : sizeof(v);
  v.struct_size = n;
  memcpy(out, &v, n);
  return ilb__writer_leave(p, 0);
}
