/* Building, publishing and reclaiming snapshots.
 *
 * Reclamation: a pick marks its ticket entry PICKING (a seq_cst CAS) before
 * it loads the snapshot pointer, and leaves that state only when it no longer
 * touches the snapshot. A writer stores the new pointer (seq_cst) and then
 * scans the ticket table: any entry still PICKING may belong to a pick that
 * loaded the old pointer, so the writer waits until that entry changes.
 * After one pass no reader can hold the old snapshot and it is freed. This is
 * the Dekker pattern: either the pick's CAS precedes the writer's scan (the
 * writer sees PICKING and waits) or the pick's pointer load follows the
 * writer's store (the pick sees the new snapshot). A pick that claimed a
 * private entry with a plain store gets the same order from membarrier(2)
 * issued by the writer, or from its own fence (thread.c).
 * SPDX-License-Identifier: MIT */
#include <sched.h>

#include "core/internal.h"
#include "policy/prefix.h"

void ilb__snap_free(struct ilb_pool *p, struct ilb__snap *s) {
  if (!s)
    return;
  if (s->pstate && s->policy->destroy)
    s->policy->destroy(s->pstate, &p->a);
  for (uint32_t z = 0; z < s->n_zones; z++)
    if (s->zsub[z]) {
      s->zsub[z]->n_zones = 0; /* a zone's snapshot has none of its own */
      ilb__snap_free(p, s->zsub[z]);
    }
  ilb__free(&p->a, s->zsub);
  ilb__free(&p->a, s);
}

/* Locality: when the replicas name 2 or more zones, a snapshot per zone
 * (its candidates, in registry order, with their own policy tables) for
 * picks that stay in the client's zone. 0 or ILB_ENOMEM (s unchanged but
 * for what ilb__snap_free releases). */
static int build_zones(struct ilb_pool *p, struct ilb__snap *s,
                       const uint8_t *avail_in) {
  const char *names[ILB__ZONES_MAX];
  uint32_t nz = 0, cnt[ILB__ZONES_MAX] = {0};
  for (uint32_t i = 0; i < s->n; i++) {
    const char *zn = p->reps[i]->zone;
    uint32_t z = 0;
    while (zn && z < nz && strcmp(names[z], zn) != 0)
      z++;
    if (zn && z == nz && nz < ILB__ZONES_MAX)
      names[nz++] = zn;
    s->zone_of[i] = (uint8_t)(zn && z < nz ? z : ILB__ZONE_NONE);
    if (s->zone_of[i] != ILB__ZONE_NONE)
      cnt[z]++;
  }
  if (nz < 2)
    return 0;
  /* one block: the pointers, the names, then each zone's snapshot */
  s->zsub = ilb__calloc(&p->a, nz, sizeof(*s->zsub) + sizeof(*s->zname));
  if (!s->zsub)
    return ILB_ENOMEM;
  s->zname = (const char **)(void *)(s->zsub + nz);
  s->n_zones = nz;
  for (uint32_t z = 0; z < nz; z++) {
    s->zname[z] = names[z];
    struct ilb__snap *c =
        ilb__malloc(&p->a, sizeof(*c) + sizeof(struct ilb__cand) * cnt[z]);
    if (!c)
      return ILB_ENOMEM;
    memcpy(c, s, sizeof(*c));
    c->cand = (struct ilb__cand *)(void *)(c + 1);
    c->n = 0;
    c->total_weight = 0;
    c->pstate = NULL;
    c->slotmap = NULL;
    c->n_slotmap = 0;
    c->n_zones = 0;
    c->zone_sub = 1;
    /* over capacity only in the whole pool's pass: a full zone spills */
    c->allow_over = 0;
    c->zsub = NULL;
    c->zone_of = NULL;
    uint64_t avail = 0;
    for (uint32_t i = 0; i < s->n; i++) {
      if (s->zone_of[i] != z)
        continue;
      c->cand[c->n++] = s->cand[i];
      c->total_weight += s->cand[i].weight;
      if (avail_in[i])
        avail += s->cand[i].weight;
    }
    atomic_init(&c->avail_weight, avail);
    s->zsub[z] = c;
    if (s->policy->build && s->policy->build(&c->pstate, c, &p->a))
      return ILB_ENOMEM;
  }
  return 0;
}

int ilb__wait_readers(struct ilb_pool *p) {
  /* Picks that claimed a private entry with a plain store are ordered here
   * (see thread.c); no-op when they use a fence instead. */
  int rc = ilb__writer_barrier();
  struct ilb__ttab *t = atomic_load(&p->tt);
  for (uint32_t i = 0; i < t->size; i++) {
    uint64_t s = atomic_load(&t->e[i]);
    if (ILB__T_KIND(s) != ILB__T_PICKING)
      continue;
    for (unsigned spins = 0; atomic_load(&t->e[i]) == s; spins++)
      if (spins > 64)
        sched_yield();
  }
  return rc;
}

int ilb__publish(struct ilb_pool *p) {
  uint32_t n = p->n_reps;
  /* the candidates, the slot map, then two bytes each: counted in
   * avail_weight, zone */
  struct ilb__snap *s =
      ilb__calloc(&p->a, 1,
                  sizeof(*s) + (sizeof(struct ilb__cand) + 2) * (size_t)n +
                      sizeof(uint32_t) * (size_t)p->n_slots);
  if (!s)
    return ILB_ENOMEM;
  s->cand = (struct ilb__cand *)(void *)(s + 1);
  s->slotmap = (uint32_t *)(void *)(s->cand + n);
  s->n_slotmap = p->n_slots;
  uint8_t *avail_in = (uint8_t *)(void *)(s->slotmap + p->n_slots);
  s->zone_of = avail_in + n;
  s->n = n;
  s->version = p->version + 1;
  s->policy = ilb__policy_get((int32_t)atomic_load(&p->opt_policy));
  s->p2c_k = (uint32_t)atomic_load(&p->opt_p2c_k);
  s->allow_over = (int)atomic_load(&p->opt_allow_over);
  s->no_key = (int32_t)atomic_load(&p->opt_no_key);
  s->ring_vnodes = (uint32_t)atomic_load(&p->opt_ring_vnodes);
  s->maglev_m = (uint32_t)atomic_load(&p->opt_maglev_m);
  s->balance_pct = (uint32_t)atomic_load(&p->opt_balance);
  s->scan_max = (uint32_t)atomic_load(&p->opt_scan_max);
  s->all_stale = (int32_t)atomic_load(&p->opt_tm_all_stale);
  s->tie = (double)atomic_load(&p->opt_tie_pct) / 100.0;
  s->w_queue = (double)atomic_load(&p->opt_score[0]) / 1000.0;
  s->ewma_tau_ns = (double)atomic_load(&p->opt_ewma_decay_ms) * 1e6;
  s->ewma_default_ns = (double)atomic_load(&p->opt_ewma_default_ms) * 1e6;
  s->token_out_pct = (uint32_t)atomic_load(&p->opt_token_out_pct);
  s->token_default = (uint32_t)atomic_load(&p->opt_token_default);
  s->pool = p;
#define PFX(id) atomic_load(&p->opt_pfx[(id) - ILB__OPT_PFX_FIRST])
  s->pfx_block_bytes = (uint32_t)PFX(ILB_OPT_PREFIX_BLOCK_BYTES);
  s->pfx_block_tokens = (uint32_t)PFX(ILB_OPT_PREFIX_BLOCK_TOKENS);
  s->pfx_max_blocks = (uint32_t)PFX(ILB_OPT_PREFIX_MAX_BLOCKS);
  s->pfx_mode = (uint32_t)PFX(ILB_OPT_PREFIX_MODE);
  s->pfx_w_prefill = (uint64_t)PFX(ILB_OPT_PREFIX_PREFILL_WEIGHT);
  s->pfx_w_load = (uint64_t)PFX(ILB_OPT_PREFIX_LOAD_WEIGHT);
  s->pfx_w_queue = (uint64_t)PFX(ILB_OPT_PREFIX_QUEUE_WEIGHT);
  s->pfx_bound_min = (uint64_t)PFX(ILB_OPT_PREFIX_BOUND_MIN);
#undef PFX
  uint64_t avail = 0;
  uint32_t was_scaled = p->ramp_scaled;
  ilb__ramp_prepare(p, s->policy->slow_start);
  s->wscale = p->ramp_scaled ? ILB__RAMP_STEPS : 1;
  for (uint32_t i = 0; i < n; i++) {
    const struct ilb__replica *r = p->reps[i];
    struct ilb__cand *c = &s->cand[i];
    c->slot = ilb__slot_at(p, r->slot);
    c->id = r->id;
    c->host_data = r->host_data;
    c->weight = ilb__eff_weight(p, r);
    c->capacity = r->capacity;
    s->total_weight += c->weight;
    s->slotmap[r->slot] = i + 1;
    /* one load: the sum and the replica's avail_in must agree */
    avail_in[i] = !(atomic_load(&c->slot->down) & ILB__EXCL_MASK);
    if (avail_in[i])
      avail += c->weight;
  }
  atomic_init(&s->avail_weight, avail);
  struct ilb__pindex *drop_pidx = NULL;
  int rc = 0;
  if (n && s->policy->build)
    rc = s->policy->build(&s->pstate, s, &p->a);
  if (!rc && atomic_load(&p->opt_loc[0]))
    rc = build_zones(p, s, avail_in);
  /* last: once it has its memory, it changes the index for good */
  if (!rc)
    rc = ilb__pfx_prepare(p, s, &drop_pidx);
  for (uint32_t z = 0; !rc && z < s->n_zones; z++)
    s->zsub[z]->pidx = s->pidx; /* one index for the pool */
  if (rc) {
    p->ramp_scaled = was_scaled;
    ilb__snap_free(p, s);
    return rc;
  }
  struct ilb__snap *old = atomic_exchange(&p->snap, s);
  p->version = s->version;
  for (uint32_t i = 0; i < n; i++) {
    struct ilb__replica *r = p->reps[i];
    r->pub_weight = s->cand[i].weight;
    r->h.avail_in = avail_in[i];
  }
  p->dirty = 0;
  p->ramp_dirty = 0; /* this snapshot has the current slow-start steps */
  /* Removals become visible to ilb_complete (ILB_EREMOVED) with the
   * snapshot that no longer lists them. */
  for (uint32_t i = 0; i < p->n_zombies; i++) {
    struct ilb__slot *z = ilb__slot_at(p, p->zombies[i]);
    if (z->dead_version == s->version) {
      atomic_store_explicit(&z->live, 0, memory_order_release);
      ilb__pfx_forget(p, p->zombies[i]); /* picked until now */
    }
  }
  int waited = ilb__wait_readers(p);
  /* and by a pick that loaded the old snapshot just before */
  for (uint32_t i = 0; i < p->n_zombies; i++)
    if (ilb__slot_at(p, p->zombies[i])->dead_version == s->version)
      ilb__pfx_forget(p, p->zombies[i]);
  if (waited == 0) {
    ilb__snap_free(p, old);
    ilb__pfx_free(p, drop_pidx);
  } else if (old) {
    if (drop_pidx) { /* can be large: say so */
      ilb__log(p, ILB_LOG_WARN,
               "membarrier failed: a replaced prefix index of %llu bytes is "
               "kept until the pool is freed",
               (unsigned long long)((drop_pidx->mask + 1) *
                                    sizeof(struct ilb__pbucket)));
      drop_pidx->retired_next = p->pidx_retired;
      p->pidx_retired = drop_pidx;
    }
    /* A late pick may still read old, and through it removed replicas'
     * records and slots: keep all of them until ilb_pool_free. */
    if (!p->retired)
      ilb__log(p, ILB_LOG_WARN,
               "membarrier failed: old snapshots and removed replicas are "
               "kept until the pool is freed");
    old->retired_next = p->retired;
    p->retired = old;
  }
  ilb__log(p, ILB_LOG_DEBUG, "published snapshot %llu with %u replicas",
           (unsigned long long)s->version, n);
  return 0;
}
