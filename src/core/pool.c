/* Pool lifecycle and the replica registry (writer side).
 * Every writer validates, allocates everything it needs, changes the
 * registry, then publishes; if publishing fails it rolls the registry back,
 * so ILB_ENOMEM leaves the pool exactly as it was.
 * SPDX-License-Identifier: MIT */
#include <stddef.h>

#include "core/internal.h"
#include "policy/prefix.h"
#include "policy/policy.h"
#include "traffic/traffic.h"

/* ---- writer entry/exit and events --------------------------------------- */

/* The pools this thread is writing to right now. Any host callback (event,
 * log, clock, allocator) runs inside a writer; a writer call it makes on a
 * pool already in this list is refused with ILB_EDEADLK instead of
 * re-entering a half-done change. Thread-local, so no shared state. */
#define WRITING_MAX 32 /* writes nested deeper through callbacks: EDEADLK */
static _Thread_local ilb_pool *tl_writing[WRITING_MAX];
static _Thread_local unsigned tl_n_writing;

int ilb__writer_enter(ilb_pool *p) {
  if (tl_n_writing >= WRITING_MAX)
    return ILB_EDEADLK;
  for (unsigned i = 0; i < tl_n_writing; i++)
    if (tl_writing[i] == p)
      return ILB_EDEADLK;
  pthread_mutex_lock(&p->mu);
  tl_writing[tl_n_writing++] = p;
  return 0;
}

int ilb__writer_leave(ilb_pool *p, int rc) {
  tl_n_writing--;
  pthread_mutex_unlock(&p->mu);
  return rc;
}

/* Publish now, or mark dirty inside a batch. */
static int commit_change(ilb_pool *p) {
  if (p->batch_depth > 0) {
    p->dirty = 1;
    return 0;
  }
  return ilb__publish(p);
}

void ilb__emit(ilb_pool *p, int32_t type, const struct ilb__replica *r,
               int32_t old_state, int32_t new_state, uint64_t old_value,
               uint64_t new_value, int32_t reason, uint64_t ts) {
  if (!p->host.on_event)
    return;
  ilb_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.struct_size = sizeof(ev);
  ev.type = type;
  ev.old_state = old_state;
  ev.new_state = new_state;
  ev.reason = reason;
  ev.replica_id = r ? r->id : NULL;
  ev.replica_host_data = r ? r->host_data : NULL;
  ev.old_value = old_value;
  ev.new_value = new_value;
  ev.timestamp_ns = ts;
  p->host.on_event(&ev, p->host.user_data);
}

static void emit(ilb_pool *p, int32_t type, const struct ilb__replica *r,
                 int32_t old_state, int32_t new_state, uint64_t old_value,
                 uint64_t new_value) {
  if (p->host.on_event)
    ilb__emit(p, type, r, old_state, new_state, old_value, new_value,
              ILB_REASON_NONE, ilb__now(p));
}

int ilb__commit(ilb_pool *p) { return commit_change(p); }

/* ---- id index: open addressing over replica pointers ------------------- */

/* FNV-1a, 64-bit: the index only needs a fast, deterministic hash. */
static uint64_t id_hash(const char *s, size_t n) {
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= UINT64_C(0x100000001b3);
  }
  return h;
}

static struct ilb__replica *index_find(const ilb_pool *p, const char *id,
                                       size_t len, uint64_t h) {
  if (!p->index_cap)
    return NULL;
  uint32_t mask = p->index_cap - 1;
  for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
    uint32_t v = p->index[i];
    if (!v)
      return NULL;
    struct ilb__replica *r = ilb__slot_at((ilb_pool *)(uintptr_t)p, v - 1)->rep;
    if (r->hash == h && r->id_len == len && memcmp(r->id, id, len) == 0)
      return r;
  }
}

/* The index maps an id's hash to its replica's slot number + 1 (stable while
 * the replica is in the pool): linear probing, load factor <= 1/2. */
static void index_insert(ilb_pool *p, const struct ilb__replica *r) {
  uint32_t mask = p->index_cap - 1, i = (uint32_t)r->hash & mask;
  while (p->index[i])
    i = (i + 1) & mask;
  p->index[i] = r->slot + 1;
}

/* Backward-shift deletion: later entries of the probe run move up so that
 * lookups never meet a hole before their key. */
static void index_delete(ilb_pool *p, const struct ilb__replica *r) {
  uint32_t mask = p->index_cap - 1, i = (uint32_t)r->hash & mask;
  while (p->index[i] != r->slot + 1)
    i = (i + 1) & mask;
  for (uint32_t j = (i + 1) & mask; p->index[j]; j = (j + 1) & mask) {
    uint32_t home =
        (uint32_t)ilb__slot_at(p, p->index[j] - 1)->rep->hash & mask;
    /* the entry at j may fill the hole at i unless its home lies
     * cyclically in (i, j] */
    int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (!stays) {
      p->index[i] = p->index[j];
      i = j;
    }
  }
  p->index[i] = 0;
}

static void index_rebuild(ilb_pool *p) {
  memset(p->index, 0, sizeof(uint32_t) * p->index_cap);
  for (uint32_t k = 0; k < p->n_reps; k++)
    index_insert(p, p->reps[k]);
}

/* Make room for n replicas in reps and the index (load factor <= 1/2). */
static int reserve_reps(ilb_pool *p, uint32_t n) {
  if (n > p->cap_reps) {
    uint32_t cap = p->cap_reps ? p->cap_reps * 2 : 16;
    while (cap < n)
      cap *= 2;
    struct ilb__replica **r = ilb__calloc(&p->a, cap, sizeof(*r));
    if (!r)
      return ILB_ENOMEM;
    if (p->n_reps)
      memcpy(r, p->reps, sizeof(*r) * p->n_reps);
    ilb__free(&p->a, p->reps);
    p->reps = r;
    p->cap_reps = cap;
  }
  if ((uint64_t)n * 2 > p->index_cap) {
    uint32_t cap = p->index_cap ? p->index_cap * 2 : 32;
    while ((uint64_t)n * 2 > cap)
      cap *= 2;
    uint32_t *ix = ilb__calloc(&p->a, cap, sizeof(*ix));
    if (!ix)
      return ILB_ENOMEM;
    ilb__free(&p->a, p->index);
    p->index = ix;
    p->index_cap = cap;
    index_rebuild(p);
  }
  return 0;
}

static int grow_u32(ilb_pool *p, uint32_t **arr, uint32_t *cap, uint32_t need) {
  if (need <= *cap)
    return 0;
  uint32_t c = *cap ? *cap * 2 : 16;
  while (c < need)
    c *= 2;
  uint32_t *a = ilb__calloc(&p->a, c, sizeof(*a));
  if (!a)
    return ILB_ENOMEM;
  if (*arr)
    memcpy(a, *arr, sizeof(*a) * *cap);
  ilb__free(&p->a, *arr);
  *arr = a;
  *cap = c;
  return 0;
}

/* ---- slots -------------------------------------------------------------- */

/* Free the records of removed replicas whose requests have all completed and
 * whose removal has been published (so no pick can still reach the slot). */
static void reclaim_zombies(ilb_pool *p) {
  if (p->retired) /* a kept snapshot may still name them (snapshot.c) */
    return;
  uint32_t k = 0;
  for (uint32_t i = 0; i < p->n_zombies; i++) {
    struct ilb__slot *s = ilb__slot_at(p, p->zombies[i]);
    if (s->dead_version <= p->version &&
        ILB__INFLIGHT(atomic_load_explicit(&s->load, memory_order_acquire)) ==
            0) {
      ilb__free(&p->a, s->rep);
      s->rep = NULL;
      p->free_slots[p->n_free++] = s->index;
    } else {
      p->zombies[k++] = p->zombies[i];
    }
  }
  p->n_zombies = k;
}

/* A free slot number, creating a segment if needed. free_slots and zombies
 * always have room for every slot, so reclaiming never allocates. */
static int take_slot(ilb_pool *p, uint32_t *out) {
  reclaim_zombies(p);
  if (p->n_free) {
    *out = p->free_slots[--p->n_free];
    /* a new replica: sessions remembered for the old one do not carry
     * over (traffic/router.c checks the generation) */
    struct ilb__slot *sl = ilb__slot_at(p, *out);
    atomic_store_explicit(&sl->gen, atomic_load(&sl->gen) + 1,
                          memory_order_relaxed);
    return 0;
  }
  uint32_t i = p->n_slots;
  if (i >= ILB__SLOTS_MAX)
    return ILB_ETOOBIG;
  int rc = grow_u32(p, &p->free_slots, &p->cap_free, i + 1);
  if (!rc)
    rc = grow_u32(p, &p->zombies, &p->cap_zombies, i + 1);
  if (rc)
    return rc;
  uint32_t sg = i >> ILB__SEG_SHIFT;
  if (!atomic_load_explicit(&p->seg[sg], memory_order_relaxed)) {
    struct ilb__slot *seg =
        ilb__calloc_aligned(&p->a, sizeof(struct ilb__slot) * ILB__SEG_SIZE);
    if (!seg)
      return ILB_ENOMEM;
    for (uint32_t j = 0; j < ILB__SEG_SIZE; j++)
      seg[j].index = (sg << ILB__SEG_SHIFT) + j;
    atomic_store_explicit(&p->seg[sg], seg, memory_order_release);
  }
  p->n_slots = i + 1;
  *out = i;
  return 0;
}

static void give_back_slot(ilb_pool *p, uint32_t i) {
  struct ilb__slot *s = ilb__slot_at(p, i);
  s->rep = NULL;
  atomic_store_explicit(&s->live, 0, memory_order_relaxed);
  p->free_slots[p->n_free++] = i;
}

/* ---- pool --------------------------------------------------------------- */

/* Pools created so far in this process: salts each pool's tickets. */
static _Atomic uint64_t pool_serial;

/* Every entry of a new table starts at a sequence number drawn from the
 * pool's salt and the table's generation, so neither a new table of the same
 * pool nor another pool re-issues a recent ticket value (up to a 2^-32
 * chance per ticket). */
static int tickets_alloc(ilb_pool *p, uint32_t n) {
  uint32_t total = n + ILB__STRIPES * ILB__PRIV;
  struct ilb__ttab *cur = atomic_load_explicit(&p->tt, memory_order_relaxed);
  /* Replaced tables are kept (a stray completion may still read one), but
   * at most one per size: a table of this size is taken back from the
   * chain, so their memory stays below twice the largest table. */
  struct ilb__ttab *t = NULL;
  for (struct ilb__ttab **link = cur ? &cur->prev : NULL; link && *link;
       link = &(*link)->prev)
    if ((*link)->mask == n - 1) {
      t = *link;
      *link = t->prev;
      break;
    }
  if (!t) {
    t = ilb__calloc_aligned(&p->a, sizeof(*t) +
                                       (sizeof(t->e[0]) + sizeof(*t->cost)) *
                                           (size_t)total);
    if (!t)
      return ILB_ENOMEM;
    t->mask = n - 1;
    t->size = total;
    t->cost = (_Atomic uint32_t *)(void *)&t->e[total];
  }
  p->ticket_gen++;
  uint32_t base = (uint32_t)ilb__mix64(p->ticket_salt + p->ticket_gen);
  for (uint32_t i = 0; i < total; i++)
    atomic_store_explicit(&t->e[i], ILB__T_MAKE(base, ILB__T_FREE, 0),
                          memory_order_relaxed);
  t->prev = cur;
  atomic_store_explicit(&p->tt, t, memory_order_release);
  for (uint32_t i = 0; i < ILB__STRIPES; i++)
    atomic_store_explicit(&p->stripes[i].cursor,
                          (uint32_t)(((uint64_t)n * i) / ILB__STRIPES),
                          memory_order_relaxed);
  return 0;
}

int ilb_pool_new(ilb_pool **pool_out, const ilb_host *host) {
  if (!pool_out)
    return ILB_EINVAL;
  *pool_out = NULL;
  /* Decide the reader fence mode before any pool exists (thread.c). */
  ilb__thread_init();
  ilb_host h;
  int hrc = ilb__host_copy(&h, host);
  if (hrc)
    return hrc;
  struct ilb__alloc a = {h.alloc, h.free, h.user_data};
  ilb_pool *p = ilb__calloc_aligned(&a, sizeof(*p));
  if (!p)
    return ILB_ENOMEM;
  p->host = h;
  p->a = a;
  atomic_init(&p->refs, 1);
  p->ticket_salt =
      ilb__mix64(h.seed ^ (atomic_fetch_add(&pool_serial, 1) * ILB__GOLDEN));
  /* Recursive so that readers such as ilb_replica_get work from inside an
   * event callback; writers are refused there before locking (EDEADLK). */
  pthread_mutexattr_t attr;
  int mrc = pthread_mutexattr_init(&attr);
  if (!mrc) {
    mrc = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    if (!mrc)
      mrc = pthread_mutex_init(&p->mu, &attr);
    pthread_mutexattr_destroy(&attr);
  }
  if (!mrc && pthread_mutex_init(&p->budget_mu, NULL)) {
    pthread_mutex_destroy(&p->mu);
    mrc = 1;
  }
  if (mrc) {
    ilb__free_aligned(&a, p);
    return ILB_ENOMEM;
  }
  ilb__opt_init(p);
  ilb__health_init(p);

  p->stripes =
      ilb__calloc_aligned(&a, sizeof(struct ilb__stripe) * ILB__STRIPES);
  int rc = p->stripes ? 0 : ILB_ENOMEM;
  if (!rc) {
    for (uint32_t i = 0; i < ILB__STRIPES; i++) {
      uint64_t s = ilb__mix64(h.seed ^ ilb__mix64((uint64_t)i + 1));
      atomic_init(&p->stripes[i].rng, s);
      /* Threads start their round-robin cursors at different points, so
       * they do not walk the same replicas in step. */
      atomic_init(&p->stripes[i].rr, ilb__mix64(s) >> 40);
    }
    rc = tickets_alloc(p, (uint32_t)atomic_load(&p->opt_max_in_flight));
  }
  if (!rc)
    rc = ilb__publish(p); /* the empty snapshot */
  if (rc) {
    ilb_pool_free(p);
    return rc;
  }
  *pool_out = p;
  return 0;
}

void ilb_pool_free(ilb_pool *p) {
  /* the host's reference, or a router's (traffic/router.c) */
  if (!p || atomic_fetch_sub(&p->refs, 1) != 1)
    return;
  struct ilb__alloc a = p->a;
  ilb__autoscale_free(p);
  ilb__snap_free(p, atomic_load(&p->snap));
  ilb__pfx_free(p, p->pidx);
  for (struct ilb__pindex *x = p->pidx_retired, *next; x; x = next) {
    next = x->retired_next;
    ilb__pfx_free(p, x);
  }
  for (struct ilb__snap *s = p->retired, *next; s; s = next) {
    next = s->retired_next;
    ilb__snap_free(p, s);
  }
  for (uint32_t i = 0; i < p->n_reps; i++)
    ilb__free(&a, p->reps[i]);
  for (uint32_t i = 0; i < p->n_zombies; i++)
    ilb__free(&a, ilb__slot_at(p, p->zombies[i])->rep);
  for (uint32_t i = 0; i < ILB__SEG_MAX; i++)
    ilb__free_aligned(&a, atomic_load(&p->seg[i]));
  ilb__free(&a, p->reps);
  ilb__free(&a, p->index);
  ilb__free(&a, p->free_slots);
  ilb__free(&a, p->zombies);
  for (struct ilb__ttab *t = atomic_load(&p->tt), *prev; t; t = prev) {
    prev = t->prev;
    ilb__free_aligned(&a, t);
  }
  ilb__free_aligned(&a, p->stripes);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->budget_mu);
  ilb__free_aligned(&a, p);
}

static int any_ticket_in_use(ilb_pool *p) {
  struct ilb__ttab *t = atomic_load(&p->tt);
  for (uint32_t i = 0; i < t->size; i++)
    if (ILB__T_KIND(atomic_load(&t->e[i])) != ILB__T_FREE)
      return 1;
  return 0;
}

int ilb_pool_set_option(ilb_pool *p, int32_t option, int64_t value) {
  if (!p)
    return ILB_EINVAL;
  if (ilb__opt_is_router(option))
    return ILB_EUNKNOWN;
  int rc = ilb__opt_validate(option, value);
  if (rc)
    return rc;
  if ((rc = ilb__writer_enter(p)))
    return rc;
  if (option == ILB_OPT_MAX_IN_FLIGHT) {
    uint32_t n = 1;
    while (n < (uint64_t)value)
      n <<= 1;
    if (n == atomic_load(&p->tt)->mask + 1)
      return ilb__writer_leave(p, ilb__opt_store(p, option, n));
    if (any_ticket_in_use(p))
      return ilb__writer_leave(p, ILB_EBUSY);
    rc = tickets_alloc(p, n);
    if (!rc)
      ilb__opt_store(p, option, n);
    return ilb__writer_leave(p, rc);
  }
  int64_t old;
  ilb_pool_get_option(&old, p, option);
  if (old == value)
    return ilb__writer_leave(p, 0);
  ilb__opt_store(p, option, value);
  /* Health options are read where they are used, but what depends on them
   * is brought up to date now; only slow start changes what a snapshot
   * holds (its weights). */
  if (option >= ILB__OPT_H_FIRST && option <= ILB__OPT_H_LAST) {
    ilb__health_opt_changed(p);
    if (option < ILB_OPT_SLOW_START_MS ||
        option > ILB_OPT_SLOW_START_MIN_WEIGHT_PERCENT)
      return ilb__writer_leave(p, 0);
  }
  rc = commit_change(p);
  if (rc)
    ilb__opt_store(p, option, old);
  else if (option == ILB_OPT_PREFIX_BLOCK_TOKENS ||
           option == ILB_OPT_PREFIX_REPLICA_TOKENS)
    ilb__pfx_caps_all(p); /* after: a failed change must not age records */
  else if (option >= ILB_OPT_TELEMETRY_MAX_AGE_MS &&
             option <= ILB_OPT_GPU_MEMORY_MIN_FREE_MIB) {
    ilb__tm_refresh_all(p); /* the precomputed telemetry scores */
    for (uint32_t i = 0; i < p->n_reps; i++) /* prefix: queue expiry */
      ilb__pfx_telemetry(p, p->reps[i]);
  }
  return ilb__writer_leave(p, rc);
}

int ilb_pool_batch_begin(ilb_pool *p) {
  if (!p)
    return ILB_EINVAL;
  int rc = ilb__writer_enter(p);
  if (rc)
    return rc;
  p->batch_depth++;
  return ilb__writer_leave(p, 0);
}

int ilb_pool_batch_commit(ilb_pool *p) {
  if (!p)
    return ILB_EINVAL;
  int rc = ilb__writer_enter(p);
  if (rc)
    return rc;
  if (p->batch_depth == 0)
    return ilb__writer_leave(p, ILB_EINVAL);
  if (p->batch_depth == 1 && p->dirty) {
    rc = ilb__publish(p);
    if (rc)
      return ilb__writer_leave(p, rc); /* batch stays open */
  }
  p->batch_depth--;
  if (p->batch_depth == 0 && p->tm_dirty)
    ilb__tm_refresh_all(p);
  if (p->batch_depth == 0) /* skipped by the batch's writes */
    ilb__panic_check(p, ilb__now(p));
  return ilb__writer_leave(p, 0);
}

int ilb_pool_count(size_t *count_out, ilb_pool *p) {
  if (!count_out || !p)
    return ILB_EINVAL;
  pthread_mutex_lock(&p->mu);
  *count_out = p->n_reps;
  pthread_mutex_unlock(&p->mu);
  return 0;
}

/* ---- replicas ----------------------------------------------------------- */

int ilb_replica_spec_init(ilb_replica_spec *spec) {
  if (!spec)
    return ILB_EINVAL;
  memset(spec, 0, sizeof(*spec));
  spec->struct_size = sizeof(*spec);
  spec->weight = 1;
  return 0;
}

static int check_str(const char *s, size_t *len_out, int allow_empty) {
  if (!s)
    return ILB_EINVAL;
  size_t n = strnlen(s, ILB_ID_MAX + 1);
  if (n > ILB_ID_MAX)
    return ILB_ETOOBIG;
  if (!n && !allow_empty)
    return ILB_EINVAL;
  *len_out = n;
  return 0;
}

static int check_weight(uint32_t w) {
  if (w == 0)
    return ILB_EINVAL;
  return w > ILB_WEIGHT_MAX ? ILB_ERANGE : 0;
}

/* Validate a spec and build its record (one allocation). */
static int make_record(ilb_pool *p, const ilb_replica_spec *sp,
                       struct ilb__replica **out) {
  size_t id_len, zone_len = 0, total = sizeof(struct ilb__replica);
  int rc;
  if ((rc = check_str(sp->id, &id_len, 0)))
    return rc;
  if (sp->zone && (rc = check_str(sp->zone, &zone_len, 1)))
    return rc;
  if ((rc = check_weight(sp->weight)))
    return rc;
  if (sp->n_labels > ILB_LABELS_MAX)
    return ILB_ETOOBIG;
  if (sp->n_labels && !sp->labels)
    return ILB_EINVAL;
  size_t kl[ILB_LABELS_MAX], vl[ILB_LABELS_MAX];
  for (size_t i = 0; i < sp->n_labels; i++) {
    if ((rc = check_str(sp->labels[i].key, &kl[i], 0)) ||
        (rc = check_str(sp->labels[i].value, &vl[i], 1)))
      return rc;
    total += kl[i] + vl[i] + 2;
  }
  total += sizeof(ilb_label) * sp->n_labels + id_len + 1 +
           (sp->zone ? zone_len + 1 : 0);
  struct ilb__replica *r = ilb__calloc(&p->a, 1, total);
  if (!r)
    return ILB_ENOMEM;
  char *c = (char *)(r + 1);
  r->labels = (ilb_label *)(void *)c;
  c += sizeof(ilb_label) * sp->n_labels;
  r->id = c;
  memcpy(c, sp->id, id_len);
  c += id_len + 1;
  r->id_len = id_len;
  if (sp->zone) {
    r->zone = c;
    memcpy(c, sp->zone, zone_len);
    c += zone_len + 1;
  }
  for (size_t i = 0; i < sp->n_labels; i++) {
    memcpy(c, sp->labels[i].key, kl[i]);
    r->labels[i].key = c;
    c += kl[i] + 1;
    memcpy(c, sp->labels[i].value, vl[i]);
    r->labels[i].value = c;
    c += vl[i] + 1;
  }
  r->n_labels = (uint32_t)sp->n_labels;
  r->weight = sp->weight;
  r->capacity = sp->capacity;
  r->host_data = sp->host_data;
  r->hash = id_hash(r->id, id_len);
  *out = r;
  return 0;
}

int ilb_replica_add(ilb_pool *p, const ilb_replica_spec *sp) {
  if (!p || !sp)
    return ILB_EINVAL;
  int rc = ilb__check_struct_in(sp, sp->struct_size, sizeof(*sp), sizeof(*sp));
  if (rc)
    return rc;
  struct ilb__replica *r;
  if ((rc = make_record(p, sp, &r)))
    return rc;
  if ((rc = ilb__writer_enter(p))) {
    ilb__free(&p->a, r);
    return rc;
  }
  uint32_t slot;
  if (index_find(p, r->id, r->id_len, r->hash))
    rc = ILB_EEXIST;
  else if (!(rc = reserve_reps(p, p->n_reps + 1)))
    rc = take_slot(p, &slot);
  if (rc) {
    ilb__free(&p->a, r);
    return ilb__writer_leave(p, rc);
  }
  struct ilb__slot *s = ilb__slot_at(p, slot);
  r->slot = slot;
  s->rep = r;
  atomic_store_explicit(&s->load, 0, memory_order_relaxed);
  atomic_store_explicit(&s->completed_hi, 0, memory_order_relaxed);
  atomic_store_explicit(&s->failed, 0, memory_order_relaxed);
  atomic_store_explicit(&s->live, 1, memory_order_relaxed);
  ilb__tm_reset(s);
  /* a reused slot: records a late pick made for its last replica die */
  ilb__pfx_forget(p, slot);
  s->pfx_kv_tokens = 0;
  s->pfx_seq = 0;
  atomic_store_explicit(&s->pfx_q_until, 0, memory_order_relaxed);
  ilb__pfx_slot_cap(p, s);
  r->pub_weight = 0;
  ilb__health_added(p, r);
  p->reps[p->n_reps++] = r;
  index_insert(p, r);
  if ((rc = commit_change(p))) {
    ilb__health_removed(p, r);
    p->n_reps--;
    index_delete(p, r);
    give_back_slot(p, slot);
    ilb__free(&p->a, r);
    return ilb__writer_leave(p, rc);
  }
  ilb__panic_check(p, ilb__now(p));
  emit(p, ILB_EVENT_REPLICA_ADDED, r, 0, ilb__state_of(s), 0, 0);
  return ilb__writer_leave(p, 0);
}

static uint32_t position_of(const ilb_pool *p, const struct ilb__replica *r) {
  uint32_t k = 0;
  while (p->reps[k] != r)
    k++;
  return k;
}

int ilb__find_locked(ilb_pool *p, const char *id, struct ilb__replica **out) {
  size_t len;
  int rc = check_str(id, &len, 0);
  if (rc)
    return rc == ILB_ETOOBIG ? ILB_ENOENT : rc;
  *out = index_find(p, id, len, id_hash(id, len));
  return *out ? 0 : ILB_ENOENT;
}

int ilb__enter_find(ilb_pool *p, const char *id, struct ilb__replica **out) {
  int rc = ilb__writer_enter(p);
  if (rc)
    return rc;
  if ((rc = ilb__find_locked(p, id, out)))
    return ilb__writer_leave(p, rc);
  return 0;
}

int32_t ilb__state_of(struct ilb__slot *s) {
  return atomic_load_explicit(&s->down, memory_order_relaxed) & ILB__EXCL_MASK
             ? ILB_REPLICA_UNAVAILABLE
             : ILB_REPLICA_ACTIVE;
}
#define state_of ilb__state_of

uint64_t ilb__completed(struct ilb__slot *s) {
  /* carries << 32 | low word; re-read if a carry slipped in between */
  uint64_t w, hi;
  do {
    hi = atomic_load(&s->completed_hi);
    w = atomic_load(&s->load);
  } while (hi != atomic_load(&s->completed_hi));
  return (hi << 32) | (w >> 32);
}

int ilb_replica_remove(ilb_pool *p, const char *id) {
  if (!p || !id)
    return ILB_EINVAL;
  struct ilb__replica *r;
  int rc = ilb__enter_find(p, id, &r);
  if (rc)
    return rc;
  uint32_t k = position_of(p, r);
  memmove(&p->reps[k], &p->reps[k + 1], sizeof(r) * (p->n_reps - k - 1));
  p->n_reps--;
  index_delete(p, r);
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  s->dead_version = p->version + 1;
  p->zombies[p->n_zombies++] = r->slot; /* room reserved in take_slot */
  if ((rc = commit_change(p))) {
    p->n_zombies--;
    s->dead_version = 0;
    memmove(&p->reps[k + 1], &p->reps[k], sizeof(r) * (p->n_reps - k));
    p->reps[k] = r;
    p->n_reps++;
    index_insert(p, r); /* room: the index held it a moment ago */
    return ilb__writer_leave(p, rc);
  }
  ilb__tm_refresh_all(p); /* the latest expiry may have been its own */
  ilb__health_removed(p, r); /* (its prefix records go at the publish) */
  ilb__panic_check(p, ilb__now(p));
  emit(p, ILB_EVENT_REPLICA_REMOVED, r, state_of(s), ILB_REPLICA_REMOVED, 0, 0);
  return ilb__writer_leave(p, 0);
}

int ilb_replica_set_weight(ilb_pool *p, const char *id, uint32_t weight) {
  if (!p || !id)
    return ILB_EINVAL;
  int rc = check_weight(weight);
  if (rc)
    return rc;
  struct ilb__replica *r;
  if ((rc = ilb__enter_find(p, id, &r)))
    return rc;
  uint32_t old = r->weight;
  if (old == weight)
    return ilb__writer_leave(p, 0);
  r->weight = weight;
  if ((rc = commit_change(p))) {
    r->weight = old;
    return ilb__writer_leave(p, rc);
  }
  ilb__tm_refresh(p, r); /* its queue term is per unit of weight */
  int32_t st = state_of(ilb__slot_at(p, r->slot));
  emit(p, ILB_EVENT_REPLICA_WEIGHT, r, st, st, old, weight);
  return ilb__writer_leave(p, 0);
}

int ilb_replica_set_available(ilb_pool *p, const char *id, int32_t available) {
  if (!p || !id || (available != 0 && available != 1))
    return ILB_EINVAL;
  struct ilb__replica *r;
  int rc = ilb__enter_find(p, id, &r);
  if (rc)
    return rc;
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  uint32_t why = atomic_load(&s->why);
  if ((int32_t)!(why & ILB_EXCLUDED_HOST) == available)
    return ilb__writer_leave(p, 0);
  int32_t old = state_of(s);
  if (available)
    atomic_fetch_and(&s->why, ~(uint32_t)ILB_EXCLUDED_HOST);
  else
    atomic_fetch_or(&s->why, ILB_EXCLUDED_HOST);
  ilb__hsync(p, r);
  uint64_t now = ilb__now(p);
  ilb__panic_check(p, now);
  if (p->host.on_event)
    ilb__emit(p, ILB_EVENT_REPLICA_STATE, r, old, state_of(s), 0, 0,
              ILB_REASON_HOST, now);
  return ilb__writer_leave(p, 0);
}

int ilb__out_find(ilb_pool *p, const char *id, size_t caller, size_t min,
                  size_t ours, size_t *want, struct ilb__replica **out) {
  if (caller < min)
    return ILB_ESIZE;
  *want = caller < ours ? caller : ours;
  pthread_mutex_lock(&p->mu);
  int rc = ilb__find_locked(p, id, out);
  if (rc)
    pthread_mutex_unlock(&p->mu);
  return rc;
}

int ilb_replica_get(ilb_replica_info *info, ilb_pool *p, const char *id) {
  if (!info || !p || !id)
    return ILB_EINVAL;
  size_t want;
  struct ilb__replica *r;
  int rc = ilb__out_find(p, id, info->struct_size,
                         offsetof(ilb_replica_info, host_data) + sizeof(void *),
                         sizeof(*info), &want, &r);
  if (rc)
    return rc;
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  ilb_replica_info v;
  memset(&v, 0, sizeof(v));
  v.struct_size = want;
  v.host_data = r->host_data;
  v.weight = r->weight;
  v.capacity = r->capacity;
  v.state = state_of(s);
  v.n_labels = r->n_labels;
  v.completed = ilb__completed(s);
  v.in_flight = (int64_t)ILB__INFLIGHT(atomic_load(&s->load));
  v.failed = atomic_load(&s->failed);
  v.tokens_in_flight = atomic_load(&s->tokens);
  double e = ilb__ewma_now(
      s, (double)atomic_load(&p->opt_ewma_decay_ms) * 1e6, ilb__now(p));
  v.latency_ewma_ms = e < 0 ? -1.0 : e / 1e6;
  v.health = r->h.health;
  v.breaker = (int32_t)(atomic_load(&s->brk) & ILB__BRK_STATE);
  v.excluded = ilb__excluded(atomic_load(&s->why), atomic_load(&s->brk));
  v.ejections = r->h.eject_n + ((v.excluded & ILB_EXCLUDED_EJECTED) &&
                                !r->h.eject_seen);
  v.errors = atomic_load(&s->errors);
  v.weight_percent = r->h.ramp_start && p->ramp_scaled
                         ? r->h.ramp_q * 100 / ILB__RAMP_STEPS
                         : 100;
  pthread_mutex_unlock(&p->mu);
  memcpy(info, &v, want);
  return 0;
}
