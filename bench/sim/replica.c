/* The replica model (see replica.h for its semantics).
 * SPDX-License-Identifier: MIT */
#include "replica.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

/* GPU profiles for an 8B-class model (Llama-3-8B: 16 GB of FP16 weights,
 * 128 KiB of KV cache per token, so 64 MiB per 512-token block). The
 * reasoning, not a measurement:
 *  - decode is memory-bound: one iteration reads the weights once, so its
 *    base time is about weight bytes / memory bandwidth (H100 SXM 3.35
 *    TB/s -> ~5 ms, A100 80GB 2.0 TB/s -> ~8 ms; L4 and T4 have ~0.3 TB/s
 *    and run the model in INT8, 8 GB -> ~27 ms), plus a per-sequence cost
 *    for its KV reads;
 *  - prefill is compute-bound: ~2 * 8e9 FLOP per token at a realistic 40%
 *    of dense FP16/INT8 peak (H100 ~990 TFLOPS, A100 312, L4 ~120 INT8
 *    useful, T4 ~65 INT8) gives roughly 25k, 8k, 3k and 1.5k tokens/s;
 *  - KV blocks: memory left after weights and activations (H100/A100 80
 *    GB: ~60 GB -> 900 blocks; L4 24 GB: ~13 GB -> 200; T4 16 GB: ~6 GB
 *    -> 90), batch limits as vLLM's defaults scaled to memory.
 * The weight is the relative throughput the library is told (H100 = 10). */
const sim_gpu sim_gpus[] = {
    {"h100", 25000.0, 0.0055, 0.00004, 256, 900, 10},
    {"a100", 8000.0, 0.0090, 0.00008, 256, 900, 5},
    {"l4", 3000.0, 0.0280, 0.00030, 64, 200, 2},
    {"t4", 1500.0, 0.0300, 0.00050, 32, 90, 1},
};
const size_t sim_n_gpus = sizeof sim_gpus / sizeof sim_gpus[0];

const sim_gpu *sim_gpu_find(const char *name) {
  for (size_t i = 0; i < sim_n_gpus; i++)
    if (strcmp(sim_gpus[i].name, name) == 0)
      return &sim_gpus[i];
  return NULL;
}

/* ---- the block cache: open addressing + an LRU list of unpinned ones ---- */

#define NIL UINT32_MAX

typedef struct entry {
  uint64_t id;
  uint32_t pins;       /* running jobs using it */
  uint32_t prev, next; /* LRU list of unpinned entries (NIL ends) */
  uint8_t used;        /* 0 empty, 1 used, 2 deleted */
} entry;

typedef struct run {
  sim_job *job;
  uint64_t finish_step; /* steps value at which it has all its tokens */
  uint32_t anon;        /* blocks it pins outside the cache */
} run;

struct sim_replica {
  const sim_gpu *gpu;
  void (*kv_fn)(void *ud, int type, uint64_t block); /* KV events */
  void *kv_ud;
  /* block cache */
  entry *tab;
  uint32_t tab_cap; /* power of two >= 2 * kv_blocks */
  uint32_t n_cached, n_tomb, pinned_cached, anon_pinned;
  uint32_t lru_head, lru_tail; /* head = least recent */
  /* queue */
  sim_job **wait;
  size_t w_head, w_n, w_cap;
  /* running: a binary min-heap on finish_step */
  run *runs;
  size_t r_n, r_cap;
  /* the iteration(s) in progress */
  uint64_t steps;     /* iterations completed */
  int busy;
  uint64_t it_start;  /* start of the first iteration of this event */
  uint64_t it_dur;    /* duration of one iteration of this event */
  uint64_t it_k;      /* iterations in this event */
  sim_job **fresh;    /* admitted in this event's first iteration */
  size_t f_n, f_cap;
  /* finished, not yet collected */
  sim_job **out;
  size_t o_head, o_n, o_cap;
  sim_replica_stats st;
  double slow; /* iteration time multiplier (gray failure) */
};

static uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint32_t find(const sim_replica *r, uint64_t id) {
  uint32_t m = r->tab_cap - 1, i = (uint32_t)mix(id) & m;
  for (;; i = (i + 1) & m) {
    const entry *e = &r->tab[i];
    if (e->used == 0)
      return NIL;
    if (e->used == 1 && e->id == id)
      return i;
  }
}

static void lru_unlink(sim_replica *r, uint32_t i) {
  entry *e = &r->tab[i];
  if (e->prev != NIL)
    r->tab[e->prev].next = e->next;
  else
    r->lru_head = e->next;
  if (e->next != NIL)
    r->tab[e->next].prev = e->prev;
  else
    r->lru_tail = e->prev;
  e->prev = e->next = NIL;
}

static void lru_push(sim_replica *r, uint32_t i) { /* most recent */
  entry *e = &r->tab[i];
  e->prev = r->lru_tail;
  e->next = NIL;
  if (r->lru_tail != NIL)
    r->tab[r->lru_tail].next = i;
  else
    r->lru_head = i;
  r->lru_tail = i;
}

static void pin(sim_replica *r, uint32_t i) {
  entry *e = &r->tab[i];
  if (e->pins++ == 0) {
    lru_unlink(r, i);
    r->pinned_cached++;
  }
}

static void unpin(sim_replica *r, uint32_t i) {
  entry *e = &r->tab[i];
  if (--e->pins == 0) {
    r->pinned_cached--;
    lru_push(r, i);
  }
}

/* Rebuild the table without tombstones (same capacity). */
static void rehash(sim_replica *r) {
  uint32_t cap = r->tab_cap;
  entry *old = r->tab;
  entry *tab = calloc(cap, sizeof(*tab));
  if (!tab)
    return; /* keep the tombstones; lookups stay correct */
  /* remember the LRU order */
  uint32_t *order = malloc(sizeof(uint32_t) * (r->n_cached + 1));
  size_t n_order = 0;
  if (order)
    for (uint32_t i = r->lru_head; i != NIL; i = old[i].next)
      order[n_order++] = i;
  if (!order) {
    free(tab);
    return;
  }
  r->tab = tab;
  r->lru_head = r->lru_tail = NIL;
  r->n_tomb = 0;
  uint32_t m = cap - 1;
  uint32_t *where = malloc(sizeof(uint32_t) * cap);
  if (!where) {
    r->tab = old;
    free(tab);
    free(order);
    return;
  }
  for (uint32_t i = 0; i < cap; i++) {
    where[i] = NIL;
    if (old[i].used != 1)
      continue;
    uint32_t j = (uint32_t)mix(old[i].id) & m;
    while (tab[j].used)
      j = (j + 1) & m;
    tab[j] = old[i];
    tab[j].prev = tab[j].next = NIL;
    where[i] = j;
  }
  for (size_t k = 0; k < n_order; k++)
    lru_push(r, where[order[k]]);
  free(where);
  free(order);
  free(old);
}

/* Insert id, pinned. The caller made room. */
static uint32_t insert_pinned(sim_replica *r, uint64_t id) {
  if ((r->n_cached + r->n_tomb + 1) * 4 > r->tab_cap * 3)
    rehash(r);
  uint32_t m = r->tab_cap - 1, i = (uint32_t)mix(id) & m;
  while (r->tab[i].used == 1)
    i = (i + 1) & m;
  if (r->tab[i].used == 2)
    r->n_tomb--;
  entry *e = &r->tab[i];
  e->id = id;
  e->used = 1;
  e->pins = 1;
  e->prev = e->next = NIL;
  r->n_cached++;
  r->pinned_cached++;
  if (r->kv_fn)
    r->kv_fn(r->kv_ud, 1, id);
  return i;
}

static void evict_one(sim_replica *r) {
  uint32_t i = r->lru_head;
  lru_unlink(r, i);
  r->tab[i].used = 2;
  r->n_cached--;
  r->n_tomb++;
  if (r->kv_fn)
    r->kv_fn(r->kv_ud, 2, r->tab[i].id);
}

void sim_replica_on_kv(sim_replica *r,
                       void (*fn)(void *ud, int type, uint64_t block),
                       void *ud) {
  r->kv_fn = fn;
  r->kv_ud = ud;
}

/* ---- jobs ----------------------------------------------------------------- */

static uint32_t blocks_total(const sim_job *j) {
  uint64_t t = (uint64_t)j->input_tokens + j->output_tokens;
  uint32_t b = (uint32_t)((t + SIM_BLOCK_TOKENS - 1) / SIM_BLOCK_TOKENS);
  return b > j->n_blocks ? b : j->n_blocks;
}

/* Blocks it needs that are not cached (so must be taken from free space
 * or by eviction), and the length of its cached prefix. */
static uint32_t need_of(const sim_replica *r, const sim_job *j,
                        uint32_t *prefix) {
  uint32_t miss = 0, lead = 0;
  int leading = 1;
  for (uint32_t b = 0; b < j->n_blocks; b++) {
    uint32_t i = find(r, j->blocks[b]);
    if (i == NIL) {
      miss++;
      leading = 0;
    } else if (leading) {
      lead++;
    }
  }
  *prefix = lead;
  return miss + (blocks_total(j) - j->n_blocks);
}

sim_replica *sim_replica_new(const sim_gpu *gpu) {
  sim_replica *r = calloc(1, sizeof(*r));
  if (!r)
    return NULL;
  r->gpu = gpu;
  r->tab_cap = 16;
  while (r->tab_cap < 2 * gpu->kv_blocks + 2)
    r->tab_cap <<= 1;
  r->tab = calloc(r->tab_cap, sizeof(entry));
  if (!r->tab) {
    free(r);
    return NULL;
  }
  r->lru_head = r->lru_tail = NIL;
  r->slow = 1.0;
  return r;
}

/* End a jump over identical iterations at the first boundary at or after
 * now (an iteration in progress completes first). */
static void cut_jump(sim_replica *r, uint64_t now) {
  if (!r->busy || r->it_k <= 1 || now <= r->it_start)
    return;
  uint64_t el = now - r->it_start, c = el / r->it_dur;
  uint64_t k = el % r->it_dur == 0 ? c : c + 1;
  if (k >= 1 && k < r->it_k)
    r->it_k = k;
}

void sim_replica_set_slowdown(sim_replica *r, double factor, uint64_t now) {
  r->slow = factor > 0 ? factor : 1.0;
  cut_jump(r, now); /* the next iteration runs at the new speed */
}

int sim_replica_crash(sim_replica *r, sim_job ***lost, size_t *n_lost) {
  size_t n = r->w_n + r->r_n + (r->o_n - r->o_head);
  sim_job **v = malloc(sizeof(*v) * (n ? n : 1));
  if (!v)
    return -1;
  size_t k = 0;
  for (size_t i = 0; i < r->w_n; i++)
    v[k++] = r->wait[r->w_head + i];
  for (size_t i = 0; i < r->r_n; i++)
    v[k++] = r->runs[i].job;
  /* finished but not collected: they did finish; keep them */
  size_t finished = r->o_n - r->o_head;
  k = r->w_n + r->r_n;
  memset(r->tab, 0, sizeof(entry) * r->tab_cap);
  r->n_cached = r->n_tomb = r->pinned_cached = r->anon_pinned = 0;
  r->lru_head = r->lru_tail = NIL;
  r->w_head = r->w_n = 0;
  r->r_n = 0;
  r->f_n = 0;
  r->busy = 0;
  (void)finished;
  memset(&r->st, 0, sizeof r->st); /* a restarted server's counters */
  if (r->kv_fn)
    r->kv_fn(r->kv_ud, 3, 0);
  r->slow = 1.0;
  *lost = v;
  *n_lost = k;
  return 0;
}

void sim_replica_free(sim_replica *r) {
  if (!r)
    return;
  free(r->tab);
  free(r->wait);
  free(r->runs);
  free(r->fresh);
  free(r->out);
  free(r);
}

static int grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap * 2 : 16;
  while (n < need)
    n *= 2;
  void *q = realloc(*p, n * size);
  if (!q)
    return -1;
  *p = q;
  *cap = n;
  return 0;
}

static void heap_push(sim_replica *r, run x) {
  size_t i = r->r_n++;
  while (i > 0) {
    size_t up = (i - 1) / 2;
    if (r->runs[up].finish_step <= x.finish_step)
      break;
    r->runs[i] = r->runs[up];
    i = up;
  }
  r->runs[i] = x;
}

static run heap_pop(sim_replica *r) {
  run top = r->runs[0], x = r->runs[--r->r_n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= r->r_n)
      break;
    if (c + 1 < r->r_n && r->runs[c + 1].finish_step < r->runs[c].finish_step)
      c++;
    if (r->runs[c].finish_step >= x.finish_step)
      break;
    r->runs[i] = r->runs[c];
    i = c;
  }
  if (r->r_n)
    r->runs[i] = x;
  return top;
}

/* Admit what fits and start the next event at time now; idle if none. */
static void start(sim_replica *r, uint64_t now) {
  const sim_gpu *g = r->gpu;
  uint32_t decoding = (uint32_t)r->r_n;
  uint64_t prefill_tokens = 0;
  r->f_n = 0;
  while (r->w_n && r->r_n < g->max_batch) {
    sim_job *j = r->wait[r->w_head];
    uint32_t prefix;
    uint32_t need = need_of(r, j, &prefix);
    /* its cached blocks nobody pins yet become pinned too */
    uint32_t idle_hits = 0;
    for (uint32_t b = 0; b < j->n_blocks; b++) {
      uint32_t i = find(r, j->blocks[b]);
      idle_hits += i != NIL && r->tab[i].pins == 0;
    }
    uint32_t used_pinned = r->pinned_cached + r->anon_pinned;
    if (used_pinned + idle_hits + need > g->kv_blocks)
      break; /* waits for the KV cache */
    if (grow((void **)&r->fresh, &r->f_cap, r->f_n + 1, sizeof(*r->fresh)) ||
        grow((void **)&r->runs, &r->r_cap, r->r_n + 1, sizeof(*r->runs)))
      break; /* out of memory: try again at the next event */
    r->w_head++;
    r->w_n--;
    /* pin what it reuses first, so that making room never evicts it */
    for (uint32_t b = 0; b < j->n_blocks; b++) {
      uint32_t i = find(r, j->blocks[b]);
      if (i != NIL)
        pin(r, i);
    }
    while (r->n_cached + r->anon_pinned + need > g->kv_blocks)
      evict_one(r);
    for (uint32_t b = 0; b < j->n_blocks; b++)
      if (find(r, j->blocks[b]) == NIL)
        insert_pinned(r, j->blocks[b]);
    if (r->kv_fn) /* the admission's stored blocks form one event */
      r->kv_fn(r->kv_ud, 0, 0);
    uint32_t anon = blocks_total(j) - j->n_blocks;
    r->anon_pinned += anon;
    j->admitted_ns = now;
    j->hit_blocks = prefix;
    r->st.prefix_queries += j->n_blocks;
    r->st.prefix_hits += prefix;
    uint64_t hit_tok = (uint64_t)prefix * SIM_BLOCK_TOKENS;
    uint64_t todo = j->input_tokens > hit_tok ? j->input_tokens - hit_tok : 0;
    prefill_tokens += todo ? todo : 1;
    r->fresh[r->f_n++] = j;
    uint32_t k = j->output_tokens ? j->output_tokens : 1;
    /* its first token ends this event's first iteration: steps + 1 */
    run x = {j, r->steps + k, anon};
    heap_push(r, x);
  }
  if (r->f_n == 0 && decoding == 0) {
    r->busy = 0;
    return;
  }
  double dur = (double)prefill_tokens / g->prefill_tok_s;
  if (decoding)
    dur += g->step_base_s + g->step_per_seq_s * decoding;
  dur *= r->slow;
  uint64_t d = (uint64_t)(dur * 1e9 + 0.5);
  r->busy = 1;
  r->it_start = now;
  r->it_dur = d ? d : 1;
  r->it_k = 1;
  if (r->f_n == 0) {
    /* identical decode iterations until the next finish */
    uint64_t k = r->runs[0].finish_step - r->steps;
    r->it_k = k ? k : 1;
  }
}

int sim_replica_submit(sim_replica *r, sim_job *j, uint64_t now) {
  if (blocks_total(j) > r->gpu->kv_blocks)
    return 0;
  /* the queue is wait[w_head .. w_head + w_n) */
  if (r->w_head + r->w_n == r->w_cap && r->w_head > 0) {
    memmove(r->wait, r->wait + r->w_head, r->w_n * sizeof(*r->wait));
    r->w_head = 0;
  }
  if (grow((void **)&r->wait, &r->w_cap, r->w_head + r->w_n + 1,
           sizeof(*r->wait)))
    return 0;
  r->wait[r->w_head + r->w_n++] = j;
  j->submitted_ns = now;
  j->admitted_ns = j->first_token_ns = j->done_ns = 0;
  j->hit_blocks = j->produced = 0;
  if (!r->busy) {
    start(r, now);
  } else {
    cut_jump(r, now); /* admitted at the next iteration boundary */
  }
  return 1;
}

uint64_t sim_replica_next(const sim_replica *r) {
  return r->busy ? r->it_start + r->it_k * r->it_dur : UINT64_MAX;
}

static void finish_event(sim_replica *r) {
  uint64_t end = sim_replica_next(r);
  for (size_t i = 0; i < r->f_n; i++) {
    sim_job *j = r->fresh[i];
    j->first_token_ns = r->it_start + r->it_dur;
    r->st.ttft_count++;
    r->st.ttft_sum_s += (double)(j->first_token_ns - j->submitted_ns) / 1e9;
  }
  /* one token per running request per iteration, first tokens included */
  r->st.gen_tokens += r->it_k * r->r_n;
  r->steps += r->it_k;
  while (r->r_n && r->runs[0].finish_step <= r->steps) {
    run x = heap_pop(r);
    sim_job *j = x.job;
    j->done_ns = end;
    j->produced = j->output_tokens ? j->output_tokens : 1;
    /* last block first: the head of a prefix is the most recent, so a
     * prefix loses its tail before its head (as vLLM and SGLang evict,
     * and as sim_reuse_lru counts the ceiling) */
    for (uint32_t b = j->n_blocks; b-- > 0;) {
      uint32_t i = find(r, j->blocks[b]);
      if (i != NIL)
        unpin(r, i);
    }
    r->anon_pinned -= x.anon;
    if (grow((void **)&r->out, &r->o_cap, r->o_n + 1, sizeof(*r->out)) == 0)
      r->out[r->o_n++] = j; /* (o_head stays 0: collected from the front) */
  }
  start(r, end);
}

size_t sim_replica_advance(sim_replica *r, uint64_t now, sim_job **done,
                           size_t cap, size_t *n_done) {
  while (r->busy && sim_replica_next(r) <= now)
    finish_event(r);
  size_t n = r->o_n - r->o_head < cap ? r->o_n - r->o_head : cap;
  for (size_t i = 0; i < n; i++)
    done[i] = r->out[r->o_head + i];
  r->o_head += n;
  if (r->o_head == r->o_n)
    r->o_head = r->o_n = 0;
  *n_done = n;
  return r->o_n - r->o_head;
}

void sim_replica_stats_get(const sim_replica *r, sim_replica_stats *st) {
  *st = r->st;
  st->waiting = (uint32_t)r->w_n;
  st->running = (uint32_t)r->r_n;
  st->kv_pinned = r->pinned_cached + r->anon_pinned;
  st->kv_used = r->n_cached + r->anon_pinned;
}

size_t sim_replica_metrics(const sim_replica *r, const char *model, char *buf,
                           size_t cap) {
  sim_replica_stats st;
  sim_replica_stats_get(r, &st);
  int n = snprintf(
      buf, cap,
      "# TYPE vllm:num_requests_waiting gauge\n"
      "vllm:num_requests_waiting{model_name=\"%s\"} %u\n"
      "# TYPE vllm:num_requests_running gauge\n"
      "vllm:num_requests_running{model_name=\"%s\"} %u\n"
      "# TYPE vllm:kv_cache_usage_perc gauge\n"
      "vllm:kv_cache_usage_perc{model_name=\"%s\"} %.6f\n"
      "# TYPE vllm:prefix_cache_queries counter\n"
      "vllm:prefix_cache_queries_total{model_name=\"%s\"} %llu\n"
      "# TYPE vllm:prefix_cache_hits counter\n"
      "vllm:prefix_cache_hits_total{model_name=\"%s\"} %llu\n"
      "# TYPE vllm:generation_tokens counter\n"
      "vllm:generation_tokens_total{model_name=\"%s\"} %llu\n"
      "# TYPE vllm:time_to_first_token_seconds histogram\n"
      "vllm:time_to_first_token_seconds_sum{model_name=\"%s\"} %.6f\n"
      "vllm:time_to_first_token_seconds_count{model_name=\"%s\"} %llu\n"
      "# TYPE vllm:cache_config_info gauge\n"
      "vllm:cache_config_info{block_size=\"%d\",num_gpu_blocks=\"%u\"} 1\n",
      model, st.waiting, model, st.running, model,
      (double)st.kv_pinned / r->gpu->kv_blocks, model,
      (unsigned long long)st.prefix_queries, model,
      (unsigned long long)st.prefix_hits, model,
      (unsigned long long)st.gen_tokens, model, st.ttft_sum_s, model,
      (unsigned long long)st.ttft_count, SIM_BLOCK_TOKENS, r->gpu->kv_blocks);
  if (n < 0)
    return 0;
  return (size_t)n < cap ? (size_t)n : cap;
}
