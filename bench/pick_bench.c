/*
 * pick_bench - the cost of one ilb_pick() + ilb_complete() pair, per policy,
 * pool size and thread count, next to a hand-written floor: the least work a
 * power-of-two-choices balancer with per-replica atomic counters can do.
 *
 * Output (stdout): one line per (policy, n, threads)
 *   BENCH policy=<name> n=<N> threads=<T> ns=<ns> floor_ns=<ns> ratio=<x>
 * then lines starting with "# " (throughput, scaling, targets).
 * ns is wall time per pair *per thread* (elapsed / pairs per thread); the
 * median of --reps repetitions, each repetition of the policy interleaved
 * with one of the floor. See bench/README.md.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <inferlb/inferlb.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_CACHE_LINE 64
#define BENCH_MAX_THREADS 64
#define BENCH_MAX_N 10000000u
#define BENCH_MAX_REPS 1000

/* Wall time one measure should last, and the pilot runs that size it. */
#define BENCH_TARGET_NS 150000000.0     /* 0.15 s */
#define BENCH_QUICK_TARGET_NS 3000000.0 /* 3 ms */

/* Targets the library is held to (reported, never enforced). */
#define TARGET_P2C_RATIO 1.5
#define TARGET_P2C_N 1024u
#define TARGET_WRR_NS 10.0
#define TARGET_SCALE 1.6

/* A repetition in which a worker spent more than this share of the wall time
 * off its CPU (another process on the core) measured the scheduler, not the
 * library: it is run again, at most BENCH_MAX_RETRIES times per measure
 * (never with --quick, whose 3 ms runs are too short to tell). */
#define BENCH_PREEMPT_MAX 0.05
#define BENCH_MAX_RETRIES 5

static const char *const k_policies[] = {
  "round_robin", "weighted_round_robin", "random", "weighted_random",
  "least_conn", "weighted_least_request", "p2c",
};
#define N_POLICIES (sizeof k_policies / sizeof k_policies[0])
static const uint32_t k_sizes[] = {8, 64, 1024, 10000};
#define N_SIZES (sizeof k_sizes / sizeof k_sizes[0])
static const int k_threads[] = {1, 2};
#define N_THREADS (sizeof k_threads / sizeof k_threads[0])

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static uint64_t now_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
    perror("pick_bench: clock_gettime(CLOCK_MONOTONIC)");
    exit(EXIT_FAILURE); /* cannot happen on a POSIX system */
  }
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of the calling thread: compared with the wall time of a run it
 * shows how long the thread was preempted (another process on its core). */
static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
    return 0; /* unsupported: no preemption is then detected */
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* r uniform in [0, 2^32) -> [0, n) by multiply-shift (Lemire), no division. */
static inline uint32_t bounded(uint32_t r, uint32_t n) {
  return (uint32_t)(((uint64_t)r * n) >> 32);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v). */
static double median(double *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_double);
  return (n % 2) ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

static int lib_fail(const char *what, const char *ctx, int rc) {
  fprintf(stderr, "pick_bench: %s%s%s failed: %s (%s, %d)\n", what,
          ctx ? " " : "", ctx ? ctx : "", ilb_strerror(rc), ilb_err_name(rc),
          rc);
  return -1;
}

static int sys_fail(const char *what, int err) {
  fprintf(stderr, "pick_bench: %s failed: %s\n", what, strerror(err));
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Worker threads                                                            */
/* ------------------------------------------------------------------------ */

/* The floor's replica: one in-flight counter per cache line, like a real
 * balancer keeps it to avoid false sharing between replicas. */
typedef struct floor_slot {
  _Alignas(BENCH_CACHE_LINE) _Atomic int64_t in_flight;
} floor_slot;

enum job_kind { JOB_POLICY = 1, JOB_FLOOR = 2, JOB_EXIT = 3 };

/* What every worker runs between the start and the done barrier. Written by
 * the main thread before the start barrier only (the barrier orders it). */
typedef struct job {
  int kind;
  int threads;     /* workers 0..threads-1 run; the others idle */
  uint64_t iters;  /* pick+complete pairs per running worker */
  ilb_pool *pool;  /* JOB_POLICY */
  floor_slot *slots; /* JOB_FLOOR */
  uint32_t n;      /* JOB_FLOOR: number of slots */
} job;

typedef struct worker {
  _Alignas(BENCH_CACHE_LINE) int index;
  pthread_t tid;
  uint64_t rng;     /* floor generator state, own stream per worker */
  uint64_t start_ns, end_ns;
  uint64_t cpu_start_ns, cpu_end_ns;
  int rc;           /* first library error of the last job, else 0 */
  const char *failed_call;
  uint64_t done;    /* pairs completed in the last job */
  uint64_t sink;    /* keeps the floor's choices observable */
} worker;

static job g_job;
static worker g_workers[BENCH_MAX_THREADS];
static pthread_barrier_t g_start, g_done;
static int g_n_workers = 1; /* main thread is worker 0 */

static void run_policy(worker *w) {
  ilb_pool *pool = g_job.pool;
  const uint64_t iters = g_job.iters;
  ilb_pick_result res;
  uint64_t i = 0;
  int rc = ilb_pick_result_init(&res);

  w->failed_call = "ilb_pick_result_init";
  w->cpu_start_ns = thread_cpu_ns();
  w->start_ns = now_ns();
  if (rc == 0) {
    for (; i < iters; i++) {
      rc = ilb_pick(&res, pool, NULL);
      if (rc != 0) {
        w->failed_call = "ilb_pick";
        break;
      }
      rc = ilb_complete(pool, res.ticket, NULL);
      if (rc != 0) {
        w->failed_call = "ilb_complete";
        break;
      }
    }
  }
  w->end_ns = now_ns();
  w->cpu_end_ns = thread_cpu_ns();
  w->rc = rc;
  w->done = i;
}

/* The floor: draw two distinct replicas with splitmix64, take the one with
 * the fewer requests in flight, count the request in and out. Same loop
 * shape as run_policy(); relaxed atomics are the least any implementation
 * needs (on x86 every locked read-modify-write costs the same anyway). */
static void run_floor(worker *w) {
  floor_slot *slots = g_job.slots;
  const uint32_t n = g_job.n;
  const uint64_t iters = g_job.iters;
  uint64_t s = w->rng, sink = 0;

  w->cpu_start_ns = thread_cpu_ns();
  w->start_ns = now_ns();
  for (uint64_t i = 0; i < iters; i++) {
    uint64_t r = splitmix64(&s);
    uint32_t a = bounded((uint32_t)r, n), b = a;
    if (n > 1) {
      b = bounded((uint32_t)(r >> 32), n - 1);
      b += (uint32_t)(b >= a);
    }
    int64_t ca = atomic_load_explicit(&slots[a].in_flight,
                                      memory_order_relaxed);
    int64_t cb = atomic_load_explicit(&slots[b].in_flight,
                                      memory_order_relaxed);
    uint32_t c = (cb < ca) ? b : a;
    atomic_fetch_add_explicit(&slots[c].in_flight, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&slots[c].in_flight, 1, memory_order_relaxed);
    sink += c;
  }
  w->end_ns = now_ns();
  w->cpu_end_ns = thread_cpu_ns();
  w->rng = s;
  w->sink += sink;
  w->rc = 0;
  w->done = iters;
}

static int barrier_wait(pthread_barrier_t *b) {
  int rc = pthread_barrier_wait(b);
  return (rc == 0 || rc == PTHREAD_BARRIER_SERIAL_THREAD) ? 0 : rc;
}

static void run_worker(worker *w) {
  w->rc = 0;
  w->done = 0;
  if (w->index >= g_job.threads)
    return;
  if (g_job.kind == JOB_POLICY)
    run_policy(w);
  else if (g_job.kind == JOB_FLOOR)
    run_floor(w);
}

/* Helpers wait here until every helper exists (go = 1), or give up
 * (go = -1) when one could not be created: the barriers count every worker,
 * so none may enter them before all are there. */
static pthread_mutex_t g_launch_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_launch_cv = PTHREAD_COND_INITIALIZER;
static int g_launch_go;

static void *helper_main(void *arg) {
  worker *w = arg;
  int go;
  pthread_mutex_lock(&g_launch_mu);
  while ((go = g_launch_go) == 0)
    pthread_cond_wait(&g_launch_cv, &g_launch_mu);
  pthread_mutex_unlock(&g_launch_mu);
  if (go < 0)
    return NULL;
  for (;;) {
    if (barrier_wait(&g_start) != 0)
      break; /* cannot happen with a valid barrier */
    if (g_job.kind == JOB_EXIT)
      break;
    run_worker(w);
    if (barrier_wait(&g_done) != 0)
      break;
  }
  return NULL;
}

static void launch(int go) {
  pthread_mutex_lock(&g_launch_mu);
  g_launch_go = go;
  pthread_cond_broadcast(&g_launch_cv);
  pthread_mutex_unlock(&g_launch_mu);
}

/* Run *j on j->threads workers (the main thread is worker 0); store the wall
 * time from the first start to the last end and, when preempted_out is not
 * NULL, the largest share of its own run a worker spent off its CPU. */
static int run_job(uint64_t *elapsed_ns_out, double *preempted_out,
                   const job *j) {
  int rc;
  g_job = *j;
  if ((rc = barrier_wait(&g_start)) != 0)
    return sys_fail("pthread_barrier_wait", rc);
  run_worker(&g_workers[0]);
  if ((rc = barrier_wait(&g_done)) != 0)
    return sys_fail("pthread_barrier_wait", rc);

  uint64_t first = UINT64_MAX, last = 0;
  double worst_off = 0.0;
  for (int i = 0; i < j->threads; i++) {
    worker *w = &g_workers[i];
    if (w->rc != 0) {
      char ctx[64];
      snprintf(ctx, sizeof ctx, "(thread %d)", i);
      return lib_fail(w->failed_call, ctx, w->rc);
    }
    if (w->start_ns < first)
      first = w->start_ns;
    if (w->end_ns > last)
      last = w->end_ns;
    /* Off-CPU share of this worker's own run (not of the job's: a worker
     * that simply finished first was not preempted). */
    uint64_t cpu = w->cpu_end_ns - w->cpu_start_ns;
    uint64_t wall = w->end_ns - w->start_ns;
    double off = (wall && cpu) ? 1.0 - (double)cpu / (double)wall : 0.0;
    if (off > worst_off)
      worst_off = off;
  }
  *elapsed_ns_out = last > first ? last - first : 1;
  if (preempted_out != NULL)
    *preempted_out = worst_off;
  return 0;
}

static int workers_start(int n_workers) {
  int rc;
  for (int i = 0; i < BENCH_MAX_THREADS; i++) {
    g_workers[i].index = i;
    g_workers[i].rng = UINT64_C(0x5eed) + (uint64_t)i * UINT64_C(0x1000193);
  }
  if ((rc = pthread_barrier_init(&g_start, NULL, (unsigned)n_workers)) != 0)
    return sys_fail("pthread_barrier_init", rc);
  if ((rc = pthread_barrier_init(&g_done, NULL, (unsigned)n_workers)) != 0) {
    pthread_barrier_destroy(&g_start);
    return sys_fail("pthread_barrier_init", rc);
  }
  g_n_workers = 1;
  for (int i = 1; i < n_workers; i++) {
    rc = pthread_create(&g_workers[i].tid, NULL, helper_main, &g_workers[i]);
    if (rc != 0) {
      sys_fail("pthread_create", rc);
      launch(-1);
      for (int k = 1; k < i; k++)
        pthread_join(g_workers[k].tid, NULL);
      pthread_barrier_destroy(&g_done);
      pthread_barrier_destroy(&g_start);
      return -1;
    }
  }
  launch(1);
  g_n_workers = n_workers;
  return 0;
}

static int workers_stop(void) {
  int rc, ret = 0;
  g_job.kind = JOB_EXIT;
  if ((rc = barrier_wait(&g_start)) != 0)
    ret = sys_fail("pthread_barrier_wait", rc);
  for (int i = 1; i < g_n_workers; i++) {
    if ((rc = pthread_join(g_workers[i].tid, NULL)) != 0)
      ret = sys_fail("pthread_join", rc);
  }
  pthread_barrier_destroy(&g_done);
  pthread_barrier_destroy(&g_start);
  return ret;
}

/* ------------------------------------------------------------------------ */
/* Measures                                                                  */
/* ------------------------------------------------------------------------ */

/* Size j->iters so one run lasts about target_ns: pilot runs grow the count
 * until a run takes a tenth of the target (they also warm caches, branch
 * predictors and the per-thread state of the library), then scale. */
static int calibrate(job *j, double target_ns, uint64_t *pairs_done) {
  uint64_t iters = 16, elapsed = 0;
  for (;;) {
    j->iters = iters;
    if (run_job(&elapsed, NULL, j) != 0)
      return -1;
    *pairs_done += iters * (uint64_t)j->threads;
    if ((double)elapsed >= target_ns / 10.0 || iters >= (UINT64_C(1) << 40))
      break;
    iters *= 2;
  }
  double scaled = (double)iters * target_ns / (double)elapsed;
  j->iters = scaled < 16.0 ? 16 : (uint64_t)scaled;
  return 0;
}

typedef struct result {
  int have;
  double ns, floor_ns;         /* medians, per pair per thread */
  double ns_min, ns_max;
  double floor_min, floor_max;
  uint64_t iters, floor_iters; /* per thread per repetition */
  double preempted, floor_preempted; /* worst share of a kept run
                                        spent off-CPU */
  int retries;                  /* repetitions run again (preempted) */
} result;

typedef struct config {
  const char *policies[N_POLICIES];
  size_t n_policies;
  uint32_t sizes[N_SIZES];
  size_t n_sizes;
  int threads[N_THREADS];
  size_t n_threads;
  int reps;
  int quick;
  double target_ns;
} config;

/* A pool of n replicas "r0".."r<n-1>", weights 1..4, unlimited capacity,
 * added in one batch. */
static int pool_build(ilb_pool **pool_out, int32_t policy, uint32_t n) {
  ilb_host host;
  ilb_replica_spec spec;
  ilb_pool *pool = NULL;
  char id[32];
  size_t count = 0;
  int rc;

  *pool_out = NULL;
  if ((rc = ilb_host_init(&host)) != 0)
    return lib_fail("ilb_host_init", NULL, rc);
  host.seed = 42;
  if ((rc = ilb_pool_new(&pool, &host)) != 0)
    return lib_fail("ilb_pool_new", NULL, rc);
  if ((rc = ilb_pool_set_option(pool, ILB_OPT_POLICY, policy)) != 0) {
    lib_fail("ilb_pool_set_option", "(ILB_OPT_POLICY)", rc);
    goto fail;
  }
  if ((rc = ilb_pool_batch_begin(pool)) != 0) {
    lib_fail("ilb_pool_batch_begin", NULL, rc);
    goto fail;
  }
  for (uint32_t i = 0; i < n; i++) {
    if ((rc = ilb_replica_spec_init(&spec)) != 0) {
      lib_fail("ilb_replica_spec_init", NULL, rc);
      goto fail;
    }
    snprintf(id, sizeof id, "r%u", (unsigned)i);
    spec.id = id;
    spec.weight = 1 + i % 4;
    spec.capacity = 0;
    if ((rc = ilb_replica_add(pool, &spec)) != 0) {
      lib_fail("ilb_replica_add", id, rc);
      goto fail;
    }
  }
  if ((rc = ilb_pool_batch_commit(pool)) != 0) {
    lib_fail("ilb_pool_batch_commit", NULL, rc);
    goto fail;
  }
  if ((rc = ilb_pool_count(&count, pool)) != 0) {
    lib_fail("ilb_pool_count", NULL, rc);
    goto fail;
  }
  if (count != n) {
    fprintf(stderr, "pick_bench: pool has %zu replicas, expected %u\n", count,
            (unsigned)n);
    goto fail;
  }
  *pool_out = pool;
  return 0;
fail:
  ilb_pool_free(pool);
  return -1;
}

/* After the runs: nothing may be left in flight and the replicas' completion
 * counts must add up to the pairs the benchmark made -- else the numbers
 * measured something other than a pick and a complete. */
static int pool_verify(ilb_pool *pool, uint32_t n, uint64_t pairs,
                       const char *policy) {
  ilb_replica_info info;
  char id[32];
  uint64_t completed = 0;
  int rc;

  for (uint32_t i = 0; i < n; i++) {
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    snprintf(id, sizeof id, "r%u", (unsigned)i);
    if ((rc = ilb_replica_get(&info, pool, id)) != 0)
      return lib_fail("ilb_replica_get", id, rc);
    if (info.in_flight != 0) {
      fprintf(stderr,
              "pick_bench: policy=%s n=%u: replica %s has %lld in flight "
              "after every ticket was completed\n",
              policy, (unsigned)n, id, (long long)info.in_flight);
      return -1;
    }
    completed += info.completed;
  }
  if (completed != pairs) {
    fprintf(stderr,
            "pick_bench: policy=%s n=%u: replicas report %llu completions, "
            "the benchmark made %llu\n",
            policy, (unsigned)n, (unsigned long long)completed,
            (unsigned long long)pairs);
    return -1;
  }
  return 0;
}

static floor_slot *floor_new(uint32_t n) {
  floor_slot *slots = aligned_alloc(BENCH_CACHE_LINE, sizeof *slots * n);
  if (slots == NULL)
    return NULL;
  for (uint32_t i = 0; i < n; i++)
    atomic_init(&slots[i].in_flight, 0);
  return slots;
}

/* Measure one (policy, n, threads): calibrate both loops, then reps
 * repetitions of the policy and the floor, interleaved (alternating which
 * goes first so neither always runs on a warmer or cooler core). */
static int measure(result *out, const config *cfg, ilb_pool *pool,
                   floor_slot *slots, uint32_t n, int threads,
                   uint64_t *floor_iters_cache, uint64_t *pairs_done) {
  double ns[BENCH_MAX_REPS], fl[BENCH_MAX_REPS];
  uint64_t elapsed, scratch = 0;
  job pj = {JOB_POLICY, threads, 0, pool, NULL, 0};
  job fj = {JOB_FLOOR, threads, 0, NULL, slots, n};

  if (calibrate(&pj, cfg->target_ns, pairs_done) != 0)
    return -1;
  if (*floor_iters_cache == 0) {
    if (calibrate(&fj, cfg->target_ns, &scratch) != 0)
      return -1;
    *floor_iters_cache = fj.iters;
  }
  fj.iters = *floor_iters_cache;

  for (int r = 0; r < cfg->reps; r++) {
    double off_p = 0.0, off_f = 0.0;
    for (int k = 0; k < 2; k++) {
      int policy_now = (k == 0) == ((r & 1) == 0);
      if (policy_now) {
        if (run_job(&elapsed, &off_p, &pj) != 0)
          return -1;
        *pairs_done += pj.iters * (uint64_t)threads;
        ns[r] = (double)elapsed / (double)pj.iters;
      } else {
        if (run_job(&elapsed, &off_f, &fj) != 0)
          return -1;
        fl[r] = (double)elapsed / (double)fj.iters;
      }
    }
    if ((off_p > BENCH_PREEMPT_MAX || off_f > BENCH_PREEMPT_MAX) &&
        out->retries < (cfg->quick ? 0 : BENCH_MAX_RETRIES)) {
      out->retries++;
      r--; /* this pair again: both halves, to keep them interleaved */
      continue;
    }
    if (off_p > out->preempted)
      out->preempted = off_p;
    if (off_f > out->floor_preempted)
      out->floor_preempted = off_f;
  }
  out->have = 1;
  out->iters = pj.iters;
  out->floor_iters = fj.iters;
  out->ns = median(ns, (size_t)cfg->reps);
  out->floor_ns = median(fl, (size_t)cfg->reps);
  out->ns_min = ns[0];
  out->ns_max = ns[cfg->reps - 1];
  out->floor_min = fl[0];
  out->floor_max = fl[cfg->reps - 1];
  return 0;
}

/* Aggregate throughput in million pairs per second. */
static double mpairs(const result *r, int threads) {
  return (double)threads * 1e3 / r->ns;
}

static void print_summary(const config *cfg, const result *res) {
#define RES(p, s, t) (&res[((p) * cfg->n_sizes + (s)) * cfg->n_threads + (t)])
  for (size_t p = 0; p < cfg->n_policies; p++)
    for (size_t s = 0; s < cfg->n_sizes; s++)
      for (size_t t = 0; t < cfg->n_threads; t++) {
        const result *r = RES(p, s, t);
        if (!r->have)
          continue;
        printf("# THROUGHPUT policy=%s n=%u threads=%d mpairs_per_s=%.2f "
               "floor_mpairs_per_s=%.2f ns_min=%.1f ns_max=%.1f "
               "floor_min=%.1f floor_max=%.1f iters=%llu "
               "preempted_max=%.0f%% floor_preempted_max=%.0f%% "
               "retries=%d\n",
               cfg->policies[p], (unsigned)cfg->sizes[s], cfg->threads[t],
               mpairs(r, cfg->threads[t]),
               (double)cfg->threads[t] * 1e3 / r->floor_ns, r->ns_min,
               r->ns_max, r->floor_min, r->floor_max,
               (unsigned long long)r->iters, 100.0 * r->preempted,
               100.0 * r->floor_preempted, r->retries);
      }

  /* Scaling: aggregate throughput of the largest thread count measured over
   * the one-thread throughput (2 vs 1 by default). */
  size_t t1 = SIZE_MAX, tn = SIZE_MAX;
  for (size_t t = 0; t < cfg->n_threads; t++) {
    if (cfg->threads[t] == 1)
      t1 = t;
    else if (tn == SIZE_MAX || cfg->threads[t] > cfg->threads[tn])
      tn = t;
  }
  if (t1 != SIZE_MAX && tn != SIZE_MAX) {
    for (size_t p = 0; p < cfg->n_policies; p++)
      for (size_t s = 0; s < cfg->n_sizes; s++) {
        const result *a = RES(p, s, t1), *b = RES(p, s, tn);
        if (!a->have || !b->have)
          continue;
        double sp = mpairs(b, cfg->threads[tn]) / mpairs(a, 1);
        double fsp = ((double)cfg->threads[tn] / b->floor_ns) /
                     (1.0 / a->floor_ns);
        printf("# SCALE policy=%s n=%u threads=%d speedup=%.2f "
               "floor_speedup=%.2f target>=%.2f %s\n",
               cfg->policies[p], (unsigned)cfg->sizes[s], cfg->threads[tn],
               sp, fsp, TARGET_SCALE, sp >= TARGET_SCALE ? "met" : "MISSED");
      }
  }

  for (size_t p = 0; p < cfg->n_policies; p++)
    for (size_t s = 0; s < cfg->n_sizes; s++)
      for (size_t t = 0; t < cfg->n_threads; t++) {
        const result *r = RES(p, s, t);
        if (!r->have)
          continue;
        if (strcmp(cfg->policies[p], "p2c") == 0 &&
            cfg->sizes[s] == TARGET_P2C_N) {
          double ratio = r->ns / r->floor_ns;
          printf("# TARGET p2c n=%u threads=%d ratio=%.2f target<=%.2f %s\n",
                 (unsigned)cfg->sizes[s], cfg->threads[t], ratio,
                 TARGET_P2C_RATIO,
                 ratio <= TARGET_P2C_RATIO ? "met" : "MISSED");
        }
        if (strcmp(cfg->policies[p], "weighted_round_robin") == 0)
          printf("# TARGET weighted_round_robin n=%u threads=%d ns=%.1f "
                 "target<=%.1f %s\n",
                 (unsigned)cfg->sizes[s], cfg->threads[t], r->ns,
                 TARGET_WRR_NS, r->ns <= TARGET_WRR_NS ? "met" : "MISSED");
      }
  printf("# CONFIG library=%s reps=%d target_ms=%.0f quick=%d\n",
         ilb_version_string(), cfg->reps, cfg->target_ns / 1e6, cfg->quick);
#undef RES
}

/* ------------------------------------------------------------------------ */
/* Command line                                                              */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f) {
  fputs("usage: pick_bench [--policy NAME] [--n N] [--threads T] [--reps R]"
        " [--quick]\n"
        "  --policy NAME  only this policy (default: all seven)\n"
        "  --n N          only this pool size (default: 8 64 1024 10000)\n"
        "  --threads T    only this thread count (default: 1 and 2)\n"
        "  --reps R       repetitions per measure, median reported "
        "(default 5)\n"
        "  --quick        short runs (CI smoke test); numbers are noisy\n",
        f);
}

static int parse_ulong(unsigned long *out, const char *s, unsigned long lo,
                       unsigned long hi) {
  char *end;
  errno = 0;
  if (s == NULL || *s == '\0' || *s == '-')
    return -1;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

static int parse_args(config *cfg, int argc, char **argv) {
  int reps_set = 0;
  unsigned long v;

  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < N_POLICIES; i++)
    cfg->policies[i] = k_policies[i];
  cfg->n_policies = N_POLICIES;
  memcpy(cfg->sizes, k_sizes, sizeof k_sizes);
  cfg->n_sizes = N_SIZES;
  memcpy(cfg->threads, k_threads, sizeof k_threads);
  cfg->n_threads = N_THREADS;
  cfg->reps = 5;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = (i + 1 < argc) ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 1;
    } else if (strcmp(a, "--quick") == 0) {
      cfg->quick = 1;
    } else if (strcmp(a, "--policy") == 0 && val) {
      cfg->policies[0] = val;
      cfg->n_policies = 1;
      i++;
    } else if (strcmp(a, "--n") == 0 && val) {
      if (parse_ulong(&v, val, 1, BENCH_MAX_N) != 0)
        goto bad;
      cfg->sizes[0] = (uint32_t)v;
      cfg->n_sizes = 1;
      i++;
    } else if (strcmp(a, "--threads") == 0 && val) {
      if (parse_ulong(&v, val, 1, BENCH_MAX_THREADS) != 0)
        goto bad;
      cfg->threads[0] = (int)v;
      cfg->n_threads = 1;
      i++;
    } else if (strcmp(a, "--reps") == 0 && val) {
      if (parse_ulong(&v, val, 1, BENCH_MAX_REPS) != 0)
        goto bad;
      cfg->reps = (int)v;
      reps_set = 1;
      i++;
    } else {
      goto bad;
    }
    continue;
  bad:
    fprintf(stderr, "pick_bench: bad argument '%s'%s%s\n", a,
            val ? " " : "", val ? val : "");
    usage(stderr);
    return -1;
  }
  if (cfg->quick && !reps_set)
    cfg->reps = 3;
  cfg->target_ns = cfg->quick ? BENCH_QUICK_TARGET_NS : BENCH_TARGET_NS;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Main                                                                      */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  config cfg;
  int32_t ids[N_POLICIES];
  result *results = NULL;
  ilb_pool *pool = NULL;
  floor_slot *slots = NULL;
  int rc, ret = EXIT_FAILURE, max_threads = 1, workers_up = 0;

  if ((rc = parse_args(&cfg, argc, argv)) != 0)
    return rc > 0 ? EXIT_SUCCESS : 2;

  if (ilb_version() / 10000 != ILB_VERSION_MAJOR) {
    fprintf(stderr, "pick_bench: library %s, header %d.%d.%d: major "
            "version mismatch\n", ilb_version_string(), ILB_VERSION_MAJOR,
            ILB_VERSION_MINOR, ILB_VERSION_PATCH);
    return EXIT_FAILURE;
  }
  for (size_t p = 0; p < cfg.n_policies; p++) {
    if ((rc = ilb_policy_from_name(&ids[p], cfg.policies[p])) != 0) {
      lib_fail("ilb_policy_from_name", cfg.policies[p], rc);
      return EXIT_FAILURE;
    }
  }
  for (size_t t = 0; t < cfg.n_threads; t++)
    if (cfg.threads[t] > max_threads)
      max_threads = cfg.threads[t];

  results = calloc(cfg.n_policies * cfg.n_sizes * cfg.n_threads,
                   sizeof *results);
  if (results == NULL) {
    sys_fail("calloc", ENOMEM);
    return EXIT_FAILURE;
  }
  /* Pilot iteration counts of the floor, per (size, threads): the floor
   * does not depend on the policy, so it is sized once. */
  uint64_t floor_iters[N_SIZES][N_THREADS];
  memset(floor_iters, 0, sizeof floor_iters);

  if (workers_start(max_threads) != 0)
    goto out;
  workers_up = 1;

  for (size_t p = 0; p < cfg.n_policies; p++) {
    for (size_t s = 0; s < cfg.n_sizes; s++) {
      uint32_t n = cfg.sizes[s];
      uint64_t pairs = 0;
      if (pool_build(&pool, ids[p], n) != 0)
        goto out;
      if ((slots = floor_new(n)) == NULL) {
        sys_fail("aligned_alloc", ENOMEM);
        goto out;
      }
      for (size_t t = 0; t < cfg.n_threads; t++) {
        result *r = &results[(p * cfg.n_sizes + s) * cfg.n_threads + t];
        if (measure(r, &cfg, pool, slots, n, cfg.threads[t],
                    &floor_iters[s][t], &pairs) != 0)
          goto out;
        printf("BENCH policy=%s n=%u threads=%d ns=%.1f floor_ns=%.1f "
               "ratio=%.2f\n",
               cfg.policies[p], (unsigned)n, cfg.threads[t], r->ns,
               r->floor_ns, r->ns / r->floor_ns);
        fflush(stdout);
      }
      if (pool_verify(pool, n, pairs, cfg.policies[p]) != 0)
        goto out;
      ilb_pool_free(pool);
      pool = NULL;
      free(slots);
      slots = NULL;
    }
  }
  print_summary(&cfg, results);
  ret = EXIT_SUCCESS;

out:
  if (workers_up && workers_stop() != 0)
    ret = EXIT_FAILURE;
  ilb_pool_free(pool);
  free(slots);
  free(results);
  if (fflush(stdout) != 0) {
    perror("pick_bench: stdout");
    ret = EXIT_FAILURE;
  }
  return ret;
}
