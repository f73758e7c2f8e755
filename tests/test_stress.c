/*
 * Stress test: picker threads pick and complete (some with failure
 * outcomes, some holding up to HOLD_MAX tickets; most requests carry a
 * session key, for the hashing policies) while one writer adds, removes,
 * reweights and takes out of service (ilb_replica_set_available) replicas
 * whose ids come from a small set, opens batches and cycles the policy
 * through all eleven with ilb_pool_set_option.
 *
 * Checked, from the threads (errors are collected, then asserted in the
 * main thread, since cmocka cannot fail from another thread):
 *   - picks return 0, ILB_ENOREPLICA or ILB_ESATURATED (ticket 0 then);
 *   - a picked replica is one that was added (its id and host_data agree,
 *     its generation was handed to ilb_replica_add) and not one whose
 *     removal had returned before the pick started, nor one that was
 *     unavailable from before the pick started until after it ended (see
 *     avail below);
 *   - completes return 0 or ILB_EREMOVED: ILB_EREMOVED exactly when the
 *     replica's removal had returned before the complete started, 0 when
 *     no removal had started before it returned (in between, either); a
 *     second complete of the same ticket returns ILB_ESTALE;
 *   - ilb_replica_get never shows a negative in-flight count, nor more than
 *     the tickets that exist, nor more than the capacity;
 *   - every writer call returns exactly what the writer's model predicts,
 *     and ilb_replica_get reports the state it predicts;
 *   - after all threads join, every replica has in_flight == 0.
 *
 * The run is bounded by iterations, not time. INFERLB_STRESS_ITERS sets the
 * picks per picker thread (default DEFAULT_ITERS); the writer makes between
 * iters/40 and iters/8 writes, stopping early once the pickers are done.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <inferlb/inferlb.h>

#define MAX_IDS 32
#define N_PICKERS 4
#define HOLD_MAX 8
/* Default picks per picker thread: a few seconds in a normal build; under
 * ThreadSanitizer (5-20x slower, writes even more) well under two minutes on
 * two cores. */
#if defined(__SANITIZE_THREAD__)
#define DEFAULT_ITERS 600000L
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DEFAULT_ITERS 600000L
#endif
#endif
#ifndef DEFAULT_ITERS
#define DEFAULT_ITERS 3000000L
#endif
/* Every ticket that can exist at once: each picker holds at most
 * HOLD_MAX + 1 (the one just picked). */
#define MAX_TICKETS (N_PICKERS * (HOLD_MAX + 1))
#define MAX_KINDS 16
#define N_KEYS 500 /* session keys the pickers draw from */

typedef struct config {
  const char *name;
  size_t n_ids;
  unsigned cap_pct; /* percent of added replicas with a capacity (1..4) */
} config;

typedef struct shared {
  ilb_pool *pool;
  const config *cfg;
  long iters, writer_min, writer_max;
  char names[MAX_IDS][24];
  char keys[N_KEYS][8];
  /* Generation handed to the latest ilb_replica_add of an id (stored before
   * the call) and the latest generation whose removal has returned (stored
   * after the call, or after the commit of the batch it was in). */
  _Atomic uint32_t gen[MAX_IDS];
  _Atomic uint32_t removed_gen[MAX_IDS];
  /* Generation of the latest removal started (stored before the call). */
  _Atomic uint32_t removing_gen[MAX_IDS];
  /* Availability: generation << 32 | epoch, the epoch odd while that
   * generation is unavailable. Made odd after ilb_replica_set_available(0)
   * returned; made even before ilb_replica_set_available(1) is called, and
   * before the replica is removed (the id's next replica starts
   * available). */
  _Atomic uint64_t avail[MAX_IDS];
  atomic_int pickers_running;
  pthread_barrier_t start; /* all threads begin together */
  /* Errors from any thread: the first message of each kind (format) is
   * kept, with a count per kind. */
  atomic_long n_errors;
  pthread_mutex_t err_mu;
  const char *err_kind[MAX_KINDS];
  long err_count[MAX_KINDS];
  char err_msg[MAX_KINDS][256];
  /* What happened, to show the run did something. */
  atomic_long picks_ok, enoreplica, esaturated, eremoved, double_completes,
      keyed;
  long writes, batches, policy_changes, avail_changes;
  /* The writer's model, read by the main thread after the join. */
  int present[MAX_IDS];
  uint32_t weight[MAX_IDS], capacity[MAX_IDS], cur_gen[MAX_IDS];
  int down[MAX_IDS];
} shared;

static void report(shared *sh, const char *fmt, ...) {
  va_list ap;
  atomic_fetch_add(&sh->n_errors, 1);
  pthread_mutex_lock(&sh->err_mu);
  for (size_t k = 0; k < MAX_KINDS; k++) {
    if (sh->err_kind[k] == NULL) {
      sh->err_kind[k] = fmt;
      va_start(ap, fmt);
      vsnprintf(sh->err_msg[k], sizeof(sh->err_msg[k]), fmt, ap);
      va_end(ap);
    }
    if (sh->err_kind[k] == fmt) {
      sh->err_count[k]++;
      break;
    }
  }
  pthread_mutex_unlock(&sh->err_mu);
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static void *encode(size_t idx, uint32_t gen) {
  return (void *)(((uintptr_t)gen << 8) | idx);
}

/* ------------------------------------------------------------------------ */
/* Pickers                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct picker_arg {
  shared *sh;
  uint64_t seed;
} picker_arg;

typedef struct held_ticket {
  uint64_t ticket;
  size_t idx;
  uint32_t gen;
} held_ticket;

static void complete_one(shared *sh, const held_ticket *h, uint64_t *rng) {
  uint64_t ticket = h->ticket;
  ilb_outcome o;
  ilb_outcome_init(&o);
  uint64_t r = splitmix(rng) % 100;
  if (r < 10)
    o.status = ILB_OUTCOME_CONNECT_ERROR;
  else if (r < 15)
    o.status = ILB_OUTCOME_TIMEOUT;
  else if (r < 25) {
    o.status = ILB_OUTCOME_HTTP_ERROR;
    o.http_status = (r & 1) ? 503 : 500;
  } else if (r < 30)
    o.status = ILB_OUTCOME_CANCELLED;
  o.latency_ns = 1000 + splitmix(rng) % 1000000;
  uint32_t removed_before =
      atomic_load_explicit(&sh->removed_gen[h->idx], memory_order_acquire);
  int rc = ilb_complete(sh->pool, ticket, r >= 90 ? NULL : &o);
  uint32_t removing_after =
      atomic_load_explicit(&sh->removing_gen[h->idx], memory_order_acquire);
  if (rc == ILB_EREMOVED) {
    atomic_fetch_add_explicit(&sh->eremoved, 1, memory_order_relaxed);
    if (removing_after < h->gen)
      report(sh, "ilb_complete returned ILB_EREMOVED for %s generation %u, "
                 "whose removal had not started",
             sh->names[h->idx], h->gen);
  } else if (rc == 0) {
    if (removed_before >= h->gen)
      report(sh, "ilb_complete returned 0 for %s generation %u, whose "
                 "removal returned before the complete started",
             sh->names[h->idx], h->gen);
  } else {
    report(sh, "ilb_complete of a held ticket returned %d (%s)", rc,
           ilb_err_name(rc));
  }
  if (splitmix(rng) % 32 == 0) {
    rc = ilb_complete(sh->pool, ticket, NULL);
    atomic_fetch_add_explicit(&sh->double_completes, 1, memory_order_relaxed);
    if (rc != ILB_ESTALE)
      report(sh, "second ilb_complete of a ticket returned %d (%s)", rc,
             ilb_err_name(rc));
  }
}

/* Checks a successful pick; returns 0 if the result is too inconsistent to
 * know whose ticket it is (host_data unknown, or id and host_data differ). */
static int check_pick(shared *sh, const ilb_pick_result *res,
                      const uint32_t *removed_before,
                      const uint64_t *avail_before) {
  uintptr_t hd = (uintptr_t)res->host_data;
  size_t idx = hd & 0xff;
  uint32_t gen = (uint32_t)(hd >> 8);
  if (res->ticket == 0) {
    report(sh, "successful pick with ticket 0");
    return 0;
  }
  if (idx >= sh->cfg->n_ids || gen == 0) {
    report(sh, "pick returned unknown host_data %p", res->host_data);
    return 0;
  }
  if (res->replica_id == NULL || strcmp(res->replica_id, sh->names[idx])) {
    report(sh, "pick returned id %s with the host_data of %s",
           res->replica_id ? res->replica_id : "(null)", sh->names[idx]);
    return 0;
  }
  if (gen > atomic_load_explicit(&sh->gen[idx], memory_order_acquire))
    report(sh, "pick returned %s generation %u, never added",
           sh->names[idx], gen);
  if (gen <= removed_before[idx])
    report(sh, "pick returned %s generation %u, whose removal returned "
               "before the pick started",
           sh->names[idx], gen);
  uint64_t a = avail_before[idx];
  if ((a & 1) && (uint32_t)(a >> 32) == gen) {
    /* That generation was unavailable before the pick started. Still so
     * after it ended if the word has not moved once we have taken the pool
     * mutex: a later ilb_replica_set_available(1) either takes the mutex
     * after us (then the pick, before our lock, cannot have seen it) or
     * before us (then its preceding store to the word is visible below). */
    size_t count;
    ilb_pool_count(&count, sh->pool);
    if (atomic_load_explicit(&sh->avail[idx], memory_order_acquire) == a)
      report(sh, "pick returned %s generation %u, unavailable from before "
                 "the pick started until after it ended",
             sh->names[idx], gen);
  }
  return 1;
}

static void check_get_range(shared *sh, const char *id) {
  ilb_replica_info info;
  memset(&info, 0, sizeof(info));
  info.struct_size = sizeof(info);
  int rc = ilb_replica_get(&info, sh->pool, id);
  if (rc == ILB_ENOENT)
    return;
  if (rc != 0)
    report(sh, "ilb_replica_get(%s) returned %d (%s)", id, rc,
           ilb_err_name(rc));
  else if (info.in_flight < 0 || info.in_flight > MAX_TICKETS)
    report(sh, "%s has in_flight %lld", id, (long long)info.in_flight);
  else if (info.capacity != 0 && info.in_flight > (int64_t)info.capacity)
    report(sh, "%s has in_flight %lld above capacity %u", id,
           (long long)info.in_flight, info.capacity);
}

static void *picker(void *argp) {
  picker_arg *arg = argp;
  shared *sh = arg->sh;
  uint64_t rng = arg->seed;
  held_ticket held[HOLD_MAX + 1];
  size_t n_held = 0, target = 0;
  uint32_t removed_before[MAX_IDS];
  uint64_t avail_before[MAX_IDS];
  ilb_pick_result res;
  ilb_pick_result_init(&res);
  ilb_request req;
  ilb_request_init(&req);
  pthread_barrier_wait(&sh->start);
  for (long it = 0; it < sh->iters; it++) {
    if (it % 64 == 0)
      target = splitmix(&rng) % (HOLD_MAX + 1);
    for (size_t i = 0; i < sh->cfg->n_ids; i++) {
      removed_before[i] =
          atomic_load_explicit(&sh->removed_gen[i], memory_order_acquire);
      avail_before[i] =
          atomic_load_explicit(&sh->avail[i], memory_order_acquire);
    }
    const ilb_request *rq = NULL;
    uint64_t kr = splitmix(&rng) % 100;
    if (kr < 60) { /* a session key: the hashing policies follow it */
      req.key = sh->keys[splitmix(&rng) % N_KEYS];
      req.key_len = strlen(req.key);
      rq = &req;
      atomic_fetch_add_explicit(&sh->keyed, 1, memory_order_relaxed);
    } else if (kr < 70) { /* a request without a key */
      req.key = NULL;
      req.key_len = 0;
      rq = &req;
    }
    int rc = ilb_pick(&res, sh->pool, rq);
    if (rc == 0) {
      uintptr_t hd = (uintptr_t)res.host_data;
      if (check_pick(sh, &res, removed_before, avail_before))
        held[n_held++] = (held_ticket){res.ticket, hd & 0xff,
                                       (uint32_t)(hd >> 8)};
      else /* cannot tell whose ticket it is: complete it at once */
        ilb_complete(sh->pool, res.ticket, NULL);
      atomic_fetch_add_explicit(&sh->picks_ok, 1, memory_order_relaxed);
    } else if (rc == ILB_ENOREPLICA || rc == ILB_ESATURATED) {
      if (res.ticket != 0)
        report(sh, "failed pick (%s) left ticket %llu", ilb_err_name(rc),
               (unsigned long long)res.ticket);
      atomic_fetch_add_explicit(rc == ILB_ENOREPLICA ? &sh->enoreplica
                                                     : &sh->esaturated,
                                1, memory_order_relaxed);
    } else {
      report(sh, "ilb_pick returned %d (%s)", rc, ilb_err_name(rc));
    }
    while (n_held > target) {
      size_t k = splitmix(&rng) % n_held;
      complete_one(sh, &held[k], &rng);
      held[k] = held[--n_held];
    }
    if (it % 1024 == 0)
      check_get_range(sh, sh->names[splitmix(&rng) % sh->cfg->n_ids]);
  }
  while (n_held > 0)
    complete_one(sh, &held[--n_held], &rng);
  atomic_fetch_sub(&sh->pickers_running, 1);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct writer_state {
  shared *sh;
  uint64_t rng;
  int in_batch;
  uint32_t pending_removed[MAX_IDS]; /* removals to announce at commit */
  int32_t next_policy;
} writer_state;

static void expect(shared *sh, const char *what, const char *id, int rc,
                   int want) {
  if (rc != want)
    report(sh, "%s(%s) returned %d (%s), expected %d (%s)", what,
           id ? id : "-", rc, ilb_err_name(rc), want, ilb_err_name(want));
}

static void w_add(writer_state *w, size_t idx) {
  shared *sh = w->sh;
  ilb_replica_spec spec;
  ilb_replica_spec_init(&spec);
  uint32_t gen = sh->cur_gen[idx];
  if (!sh->present[idx]) {
    gen++;
    atomic_store_explicit(&sh->gen[idx], gen, memory_order_release);
  }
  spec.id = sh->names[idx];
  spec.weight = 1 + (uint32_t)(splitmix(&w->rng) % 100);
  spec.capacity = splitmix(&w->rng) % 100 < sh->cfg->cap_pct
                      ? 1 + (uint32_t)(splitmix(&w->rng) % 4)
                      : 0;
  spec.host_data = encode(idx, gen);
  int rc = ilb_replica_add(sh->pool, &spec);
  expect(sh, "ilb_replica_add", spec.id, rc,
         sh->present[idx] ? ILB_EEXIST : 0);
  if (rc == 0 && !sh->present[idx]) {
    sh->present[idx] = 1;
    sh->cur_gen[idx] = gen;
    sh->weight[idx] = spec.weight;
    sh->capacity[idx] = spec.capacity;
  }
}

/* Availability word of idx: generation gen, epoch moved on by one. */
static void bump_avail(shared *sh, size_t idx, uint32_t gen) {
  uint64_t a = atomic_load_explicit(&sh->avail[idx], memory_order_relaxed);
  uint64_t next = ((uint64_t)gen << 32) | (uint32_t)((uint32_t)a + 1);
  atomic_store_explicit(&sh->avail[idx], next, memory_order_release);
}

static void w_remove(writer_state *w, size_t idx) {
  shared *sh = w->sh;
  if (sh->present[idx] && sh->down[idx]) {
    bump_avail(sh, idx, sh->cur_gen[idx]); /* even: the next one is up */
    sh->down[idx] = 0;
  }
  if (sh->present[idx])
    atomic_store_explicit(&sh->removing_gen[idx], sh->cur_gen[idx],
                          memory_order_release);
  int rc = ilb_replica_remove(sh->pool, sh->names[idx]);
  expect(sh, "ilb_replica_remove", sh->names[idx], rc,
         sh->present[idx] ? 0 : ILB_ENOENT);
  if (rc == 0 && sh->present[idx]) {
    sh->present[idx] = 0;
    if (w->in_batch)
      w->pending_removed[idx] = sh->cur_gen[idx];
    else
      atomic_store_explicit(&sh->removed_gen[idx], sh->cur_gen[idx],
                            memory_order_release);
  }
}

static void w_set_weight(writer_state *w, size_t idx) {
  shared *sh = w->sh;
  uint32_t weight = 1 + (uint32_t)(splitmix(&w->rng) % 100);
  int rc = ilb_replica_set_weight(sh->pool, sh->names[idx], weight);
  expect(sh, "ilb_replica_set_weight", sh->names[idx], rc,
         sh->present[idx] ? 0 : ILB_ENOENT);
  if (rc == 0)
    sh->weight[idx] = weight;
}

/* Take a replica out of service or bring it back: at once, batch or not;
 * a replica removed since is not touched (ILB_ENOENT). */
static void w_set_available(writer_state *w, size_t idx) {
  shared *sh = w->sh;
  /* Mostly in service: back with 60%, out with 40%. */
  int avail = splitmix(&w->rng) % 100 < 60;
  int changes = sh->present[idx] && sh->down[idx] == avail;
  if (changes && avail)
    bump_avail(sh, idx, sh->cur_gen[idx]); /* even, before the call */
  int rc = ilb_replica_set_available(sh->pool, sh->names[idx], avail);
  expect(sh, "ilb_replica_set_available", sh->names[idx], rc,
         sh->present[idx] ? 0 : ILB_ENOENT);
  if (changes && !avail)
    bump_avail(sh, idx, sh->cur_gen[idx]); /* odd, once it returned */
  if (changes) {
    sh->down[idx] = !avail;
    sh->avail_changes++;
  }
}

static void w_set_policy(writer_state *w) {
  int rc = ilb_pool_set_option(w->sh->pool, ILB_OPT_POLICY, w->next_policy);
  expect(w->sh, "ilb_pool_set_option(POLICY)", ilb_policy_name(w->next_policy),
         rc, 0);
  /* cycles all 11 policies */
  w->next_policy = w->next_policy % ILB_POLICY_CHWBL + 1;
  w->sh->policy_changes++;
}

static void w_batch_begin(writer_state *w) {
  expect(w->sh, "ilb_pool_batch_begin", NULL,
         ilb_pool_batch_begin(w->sh->pool), 0);
  w->in_batch = 1;
}

static void w_batch_commit(writer_state *w) {
  shared *sh = w->sh;
  expect(sh, "ilb_pool_batch_commit", NULL, ilb_pool_batch_commit(sh->pool),
         0);
  w->in_batch = 0;
  for (size_t i = 0; i < sh->cfg->n_ids; i++)
    if (w->pending_removed[i]) {
      atomic_store_explicit(&sh->removed_gen[i], w->pending_removed[i],
                            memory_order_release);
      w->pending_removed[i] = 0;
    }
  sh->batches++;
}

static void w_replica_op(writer_state *w) {
  size_t idx = splitmix(&w->rng) % w->sh->cfg->n_ids;
  uint64_t r = splitmix(&w->rng) % 100;
  if (r < 40)
    w_add(w, idx);
  else if (r < 65)
    w_remove(w, idx);
  else if (r < 80)
    w_set_weight(w, idx);
  else
    w_set_available(w, idx);
}

/* The writer's view, checked against the library from the writer thread
 * while the pickers run. */
static void w_check(writer_state *w) {
  shared *sh = w->sh;
  size_t idx = splitmix(&w->rng) % sh->cfg->n_ids;
  ilb_replica_info info;
  memset(&info, 0, sizeof(info));
  info.struct_size = sizeof(info);
  int rc = ilb_replica_get(&info, sh->pool, sh->names[idx]);
  expect(sh, "ilb_replica_get", sh->names[idx], rc,
         sh->present[idx] ? 0 : ILB_ENOENT);
  if (rc == 0 && sh->present[idx]) {
    int32_t want_state =
        sh->down[idx] ? ILB_REPLICA_UNAVAILABLE : ILB_REPLICA_ACTIVE;
    if (info.weight != sh->weight[idx] ||
        info.capacity != sh->capacity[idx] ||
        info.host_data != encode(idx, sh->cur_gen[idx]) ||
        info.state != want_state)
      report(sh, "get %s: weight %u capacity %u state %d, expected %u %u %d",
             sh->names[idx], info.weight, info.capacity, info.state,
             sh->weight[idx], sh->capacity[idx], want_state);
    check_get_range(sh, sh->names[idx]);
  }
  size_t count = 0, want = 0;
  for (size_t i = 0; i < sh->cfg->n_ids; i++)
    want += sh->present[i] != 0;
  expect(sh, "ilb_pool_count", NULL, ilb_pool_count(&count, sh->pool), 0);
  if (count != want)
    report(sh, "ilb_pool_count = %zu, expected %zu", count, want);
}

static void *writer(void *argp) {
  writer_state *w = argp;
  shared *sh = w->sh;
  pthread_barrier_wait(&sh->start);
  for (long op = 0; op < sh->writer_max; op++) {
    if (op >= sh->writer_min && atomic_load(&sh->pickers_running) == 0)
      break;
    uint64_t r = splitmix(&w->rng) % 1000;
    if (r < 860) {
      w_replica_op(w);
    } else if (r < 930) {
      w_batch_begin(w);
      long k = 2 + (long)(splitmix(&w->rng) % 5);
      for (long i = 0; i < k; i++)
        w_replica_op(w);
      if (splitmix(&w->rng) % 4 == 0)
        w_set_policy(w);
      w_batch_commit(w);
    } else if (r < 975) {
      w_set_policy(w);
    } else if (r < 995) {
      int64_t k = 2 + (int64_t)(splitmix(&w->rng) % 15);
      expect(sh, "ilb_pool_set_option(P2C_CHOICES)", NULL,
             ilb_pool_set_option(sh->pool, ILB_OPT_P2C_CHOICES, k), 0);
    } else {
      /* Empty the pool in one batch: pickers see ILB_ENOREPLICA. */
      w_batch_begin(w);
      for (size_t i = 0; i < sh->cfg->n_ids; i++)
        if (sh->present[i])
          w_remove(w, i);
      w_batch_commit(w);
    }
    sh->writes++;
    if (op % 8 == 0)
      w_check(w);
  }
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* The run                                                                   */
/* ------------------------------------------------------------------------ */

static long iters_from_env(void) {
  const char *s = getenv("INFERLB_STRESS_ITERS");
  if (s == NULL || *s == '\0')
    return DEFAULT_ITERS;
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < 1)
    fail_msg("INFERLB_STRESS_ITERS=\"%s\" is not a positive integer", s);
  return v;
}

static void run_stress(const config *cfg, uint64_t seed) {
  shared *sh = calloc(1, sizeof(*sh));
  assert_non_null(sh);
  sh->cfg = cfg;
  sh->iters = iters_from_env();
  sh->writer_min = sh->iters / 40 + 1;
  sh->writer_max = sh->iters / 8 + 1;
  pthread_mutex_init(&sh->err_mu, NULL);
  assert_int_equal(pthread_barrier_init(&sh->start, NULL, N_PICKERS + 1), 0);
  for (size_t i = 0; i < cfg->n_ids; i++)
    snprintf(sh->names[i], sizeof(sh->names[i]), "id%02zu", i);
  for (size_t i = 0; i < N_KEYS; i++)
    snprintf(sh->keys[i], sizeof(sh->keys[i]), "s%zu", i);

  ilb_host host;
  assert_int_equal(ilb_host_init(&host), 0);
  host.seed = seed;
  assert_int_equal(ilb_pool_new(&sh->pool, &host), 0);
  /* Small ticket table: writes stay cheap; far above MAX_TICKETS. Small
   * hashing tables for the same reason (ring: vnodes * weight points). */
  assert_int_equal(
      ilb_pool_set_option(sh->pool, ILB_OPT_MAX_IN_FLIGHT, 4096), 0);
  assert_int_equal(ilb_pool_set_option(sh->pool, ILB_OPT_RING_VNODES, 4), 0);
  assert_int_equal(
      ilb_pool_set_option(sh->pool, ILB_OPT_MAGLEV_TABLE_SIZE, 257), 0);

  writer_state w;
  memset(&w, 0, sizeof(w));
  w.sh = sh;
  w.rng = seed ^ 0xabcdef;
  w.next_policy = ILB_POLICY_ROUND_ROBIN;
  /* Start with half the ids present. */
  for (size_t i = 0; i < cfg->n_ids; i += 2)
    w_add(&w, i);

  atomic_store(&sh->pickers_running, N_PICKERS);
  pthread_t pt[N_PICKERS], wt;
  picker_arg pa[N_PICKERS];
  for (int i = 0; i < N_PICKERS; i++) {
    pa[i].sh = sh;
    pa[i].seed = seed * 31 + (uint64_t)i + 1;
    assert_int_equal(pthread_create(&pt[i], NULL, picker, &pa[i]), 0);
  }
  assert_int_equal(pthread_create(&wt, NULL, writer, &w), 0);
  for (int i = 0; i < N_PICKERS; i++)
    assert_int_equal(pthread_join(pt[i], NULL), 0);
  assert_int_equal(pthread_join(wt, NULL), 0);

  /* Quiescent: every replica left has nothing in flight. */
  size_t count = 0, want = 0;
  assert_int_equal(ilb_pool_count(&count, sh->pool), 0);
  for (size_t i = 0; i < cfg->n_ids; i++) {
    ilb_replica_info info;
    memset(&info, 0, sizeof(info));
    info.struct_size = sizeof(info);
    int rc = ilb_replica_get(&info, sh->pool, sh->names[i]);
    if (!sh->present[i]) {
      if (rc != ILB_ENOENT)
        report(sh, "after join: get of absent %s returned %s", sh->names[i],
               ilb_err_name(rc));
      continue;
    }
    want++;
    if (rc != 0)
      report(sh, "after join: get %s returned %s", sh->names[i],
             ilb_err_name(rc));
    else if (info.in_flight != 0)
      report(sh, "after join: %s has in_flight %lld, expected 0",
             sh->names[i], (long long)info.in_flight);
    else if (info.state !=
             (sh->down[i] ? ILB_REPLICA_UNAVAILABLE : ILB_REPLICA_ACTIVE))
      report(sh, "after join: %s has state %d, expected %s", sh->names[i],
             info.state, sh->down[i] ? "UNAVAILABLE" : "ACTIVE");
  }
  if (count != want)
    report(sh, "after join: ilb_pool_count = %zu, expected %zu", count, want);

  printf("[ %s ] %ld picks/thread x %d: %ld ok, %ld ENOREPLICA, "
         "%ld ESATURATED, %ld EREMOVED, %ld double completes, %ld keyed; "
         "writer: %ld writes, %ld batches, %ld policy changes, %ld "
         "availability changes\n",
         cfg->name, sh->iters, N_PICKERS, atomic_load(&sh->picks_ok),
         atomic_load(&sh->enoreplica), atomic_load(&sh->esaturated),
         atomic_load(&sh->eremoved), atomic_load(&sh->double_completes),
         atomic_load(&sh->keyed), sh->writes, sh->batches,
         sh->policy_changes, sh->avail_changes);

  long n_errors = atomic_load(&sh->n_errors);
  char first[sizeof(sh->err_msg[0])];
  memcpy(first, sh->err_msg[0], sizeof(first));
  for (size_t k = 0; k < MAX_KINDS && sh->err_kind[k]; k++)
    printf("[ %s ] error x %ld, first: %s\n", cfg->name, sh->err_count[k],
           sh->err_msg[k]);
  long picks_ok = atomic_load(&sh->picks_ok), writes = sh->writes;
  ilb_pool_free(sh->pool);
  pthread_mutex_destroy(&sh->err_mu);
  pthread_barrier_destroy(&sh->start);
  free(sh);
  if (n_errors != 0)
    fail_msg("%s: %ld errors; first: %s", cfg->name, n_errors, first);
  assert_true(picks_ok > 0);
  assert_true(writes >= 1);
}

/* 32 ids coming and going; a fifth of the replicas have a capacity. */
static void test_stress_mixed(void **state) {
  (void)state;
  static const config cfg = {"mixed", 32, 20};
  run_stress(&cfg, 1);
}

/* 3 ids: the same ids are removed and re-added constantly while their
 * tickets are in flight; half have a small capacity, so picks also see
 * ILB_ESATURATED and ILB_ENOREPLICA often. */
static void test_stress_churn(void **state) {
  (void)state;
  static const config cfg = {"churn", 3, 50};
  run_stress(&cfg, 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stress_mixed),
      cmocka_unit_test(test_stress_churn),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
