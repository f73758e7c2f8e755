/*
 * prefix_bench - the cost of one ilb_pick() + ilb_complete() pair under the
 * prefix policy with a prompt of --blocks blocks (default 32) at n replicas
 * (default 64), next to the library's own p2c pair (NULL request) measured
 * in the same run, and the prefix index's memory.
 *
 * Workloads (every request has exactly --blocks blocks):
 *   shared  one of 64 system prompts (the first half of the blocks) then a
 *           question never seen before (the second half): half the blocks
 *           match, half are recorded
 *   repeat  one of 4096 (--convs) conversations of --blocks blocks, again:
 *           all match once warm, little is recorded; the table's lines are
 *           mostly out of cache (4096 x 32 blocks)
 *   fresh   every block new: one lookup, every block recorded
 *   prompt  `shared` as prompt text (--blocks x 256 bytes) that the library
 *           cuts and hashes (XXH64 chain) itself
 * Each thread holds 4 * n / threads tickets in flight (a ring: pick one,
 * complete the oldest), so the load bound and the in-flight token costs
 * are those of a busy pool. Before timing, more records are made than the
 * index has entries (it stays about half live at the defaults: the
 * replicas' LRUs bound the live records; evictions happen in full
 * buckets during the measure).
 *
 * Output:
 *   BENCH policy=prefix n=<N> threads=<T> blocks=<B> workload=<w> ns=<ns>
 *         floor_ns=<ns> ratio=<x> hit=<matched/blocks>
 *   BENCH policy=prefix table_blocks=<opt> capacity=<entries> bytes=<b>
 *         bytes_per_entry=<x>
 * ns: wall time per pair per thread, median of --reps repetitions, each
 * interleaved with one of the floor (p2c, NULL request, same ring of
 * tickets in flight).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <inferlb/inferlb.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 8
#define MAX_BLOCKS 256
#define SYSTEMS 64
#define CONVERSATIONS 4096 /* --convs */
#define BLOCK_BYTES 256

enum { W_SHARED, W_REPEAT, W_FRESH, W_PROMPT, W_COUNT };
static const char *const wname[W_COUNT] = {"shared", "repeat", "fresh",
                                           "prompt"};

static uint32_t g_n = 64, g_blocks = 32, g_reps = 5, g_convs = CONVERSATIONS;
static uint64_t g_iters = 200000;
static int64_t g_table = 262144;
static const char *g_workloads = "shared,repeat,fresh,prompt";

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void die(const char *what, int rc) {
  fprintf(stderr, "prefix_bench: %s: %s\n", what, ilb_strerror(rc));
  exit(1);
}

/* One thread's request generator and ticket ring. */
typedef struct {
  ilb_pool *pool;
  int workload; /* -1: floor (NULL request) */
  uint64_t rng, fresh;
  uint64_t blocks[MAX_BLOCKS];
  char prompt[MAX_BLOCKS * BLOCK_BYTES];
  uint64_t *ring;
  uint32_t ring_n, ring_pos;
  uint64_t iters;
  double ns;
  pthread_t th;
} worker;

/* Fill w->blocks (or w->prompt) with the next request of its workload. */
static void next_request(worker *w, ilb_request *req) {
  uint32_t B = g_blocks, half = B / 2;
  uint64_t r = splitmix64(&w->rng);
  switch (w->workload) {
  case W_SHARED:
  case W_PROMPT: {
    uint64_t sys = r % SYSTEMS;
    for (uint32_t i = 0; i < half; i++)
      w->blocks[i] = sys * 1000003u + i + 1;
    for (uint32_t i = half; i < B; i++)
      w->blocks[i] = (w->fresh++ << 8) ^ UINT64_C(0x5555000000000000);
    break;
  }
  case W_REPEAT: {
    uint64_t conv = r % g_convs;
    for (uint32_t i = 0; i < B; i++)
      w->blocks[i] = (conv + 1) * 7919u * 100003u + i;
    break;
  }
  default: /* W_FRESH */
    for (uint32_t i = 0; i < B; i++)
      w->blocks[i] = (w->fresh++ << 8) ^ UINT64_C(0xaaaa000000000000);
    break;
  }
  if (w->workload == W_PROMPT) {
    /* the same blocks as text: each block's 8 bytes repeated */
    for (uint32_t i = 0; i < B; i++)
      for (uint32_t k = 0; k < BLOCK_BYTES; k += 8)
        memcpy(w->prompt + (size_t)i * BLOCK_BYTES + k, &w->blocks[i], 8);
    req->prompt = w->prompt;
    req->prompt_len = (size_t)B * BLOCK_BYTES;
  } else {
    req->block_hashes = w->blocks;
    req->n_blocks = B;
  }
  req->prompt_tokens = B * 64;
  req->output_tokens = 128;
}

static void pair(worker *w) {
  ilb_request req;
  ilb_request_init(&req);
  ilb_pick_result res;
  ilb_pick_result_init(&res);
  int rc;
  if (w->workload >= 0) {
    next_request(w, &req);
    rc = ilb_pick(&res, w->pool, &req);
  } else {
    rc = ilb_pick(&res, w->pool, NULL);
  }
  if (rc)
    die("ilb_pick", rc);
  uint64_t *slot = &w->ring[w->ring_pos];
  if (*slot && (rc = ilb_complete(w->pool, *slot, NULL)))
    die("ilb_complete", rc);
  *slot = res.ticket;
  w->ring_pos = (w->ring_pos + 1) % w->ring_n;
}

static void *run(void *arg) {
  worker *w = arg;
  uint64_t t0 = now_ns();
  for (uint64_t i = 0; i < w->iters; i++)
    pair(w);
  w->ns = (double)(now_ns() - t0) / (double)w->iters;
  return NULL;
}

static void drain(worker *w) {
  for (uint32_t i = 0; i < w->ring_n; i++)
    if (w->ring[i]) {
      ilb_complete(w->pool, w->ring[i], NULL);
      w->ring[i] = 0;
    }
}

/* Run iters pairs on each of t workers at once; mean ns per pair. */
static double measure(worker *ws, int t, uint64_t iters) {
  for (int i = 0; i < t; i++) {
    ws[i].iters = iters;
    if (i && pthread_create(&ws[i].th, NULL, run, &ws[i]))
      die("pthread_create", ILB_ENOMEM);
  }
  run(&ws[0]);
  double sum = ws[0].ns;
  for (int i = 1; i < t; i++) {
    pthread_join(ws[i].th, NULL);
    sum += ws[i].ns;
  }
  return sum / t;
}

static ilb_pool *make_pool(int32_t policy) {
  ilb_pool *p;
  ilb_host h;
  ilb_host_init(&h);
  h.seed = 42;
  int rc = ilb_pool_new(&p, &h);
  if (!rc)
    rc = ilb_pool_set_option(p, ILB_OPT_POLICY, policy);
  if (!rc && policy == ILB_POLICY_PREFIX)
    rc = ilb_pool_set_option(p, ILB_OPT_PREFIX_TABLE_BLOCKS, g_table);
  if (!rc)
    rc = ilb_pool_set_option(p, ILB_OPT_PREFIX_BLOCK_BYTES, BLOCK_BYTES);
  if (rc)
    die("pool", rc);
  ilb_pool_batch_begin(p);
  for (uint32_t i = 0; i < g_n; i++) {
    char id[32];
    snprintf(id, sizeof id, "replica-%u", i);
    ilb_replica_spec s;
    ilb_replica_spec_init(&s);
    s.id = id;
    if ((rc = ilb_replica_add(p, &s)))
      die("ilb_replica_add", rc);
  }
  if ((rc = ilb_pool_batch_commit(p)))
    die("commit", rc);
  return p;
}

static void setup(worker *ws, int t, ilb_pool *p, int workload,
                  uint64_t seed) {
  for (int i = 0; i < t; i++) {
    worker *w = &ws[i];
    w->pool = p;
    w->workload = workload;
    w->rng = seed * 1000 + (uint64_t)i;
    w->fresh = ((uint64_t)i + 1) << 40;
    w->ring_n = 4 * g_n / (uint32_t)t;
    w->ring_pos = 0;
    w->ring = calloc(w->ring_n, sizeof(uint64_t));
    if (!w->ring)
      die("calloc", ILB_ENOMEM);
  }
}

static void teardown(worker *ws, int t) {
  for (int i = 0; i < t; i++) {
    drain(&ws[i]);
    free(ws[i].ring);
  }
}

static void usage(void) {
  fprintf(stderr,
          "usage: prefix_bench [--n N] [--blocks B] [--threads 1,2] "
          "[--reps R] [--iters I] [--table-blocks T] [--convs C] "
          "[--workloads shared,repeat,fresh,prompt] [--quick]\n");
  exit(2);
}

int main(int argc, char **argv) {
  int threads[MAX_THREADS] = {1, 2}, n_threads = 2;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--quick")) {
      g_iters = 2000;
      g_reps = 1;
      g_table = 16384;
    } else if (!v) {
      usage();
    } else if (!strcmp(a, "--n")) {
      g_n = (uint32_t)strtoul(v, NULL, 10), i++;
    } else if (!strcmp(a, "--workloads")) {
      g_workloads = v, i++;
    } else if (!strcmp(a, "--convs")) {
      g_convs = (uint32_t)strtoul(v, NULL, 10), i++;
    } else if (!strcmp(a, "--blocks")) {
      g_blocks = (uint32_t)strtoul(v, NULL, 10), i++;
    } else if (!strcmp(a, "--reps")) {
      g_reps = (uint32_t)strtoul(v, NULL, 10), i++;
    } else if (!strcmp(a, "--iters")) {
      g_iters = strtoull(v, NULL, 10), i++;
    } else if (!strcmp(a, "--table-blocks")) {
      g_table = strtoll(v, NULL, 10), i++;
    } else if (!strcmp(a, "--threads")) {
      n_threads = 0;
      for (const char *s = v; *s && n_threads < MAX_THREADS;) {
        threads[n_threads++] = (int)strtol(s, (char **)&s, 10);
        if (*s == ',')
          s++;
      }
      i++;
    } else {
      usage();
    }
  }
  if (g_n < 2 || g_blocks < 2 || g_convs < 1 || g_blocks > MAX_BLOCKS || g_reps < 1 ||
      g_reps > 101 || !g_iters)
    usage();
  for (int k = 0; k < n_threads; k++)
    if (threads[k] < 1 || threads[k] > MAX_THREADS)
      usage();

  for (int k = 0; k < n_threads; k++) {
    int t = threads[k];
    for (int wl = 0; wl < W_COUNT; wl++) {
      if (!strstr(g_workloads, wname[wl]))
        continue;
      ilb_pool *pp = make_pool(ILB_POLICY_PREFIX);
      ilb_pool *pf = make_pool(ILB_POLICY_P2C);
      worker *wp = calloc(MAX_THREADS, sizeof(worker));
      worker *wf = calloc(MAX_THREADS, sizeof(worker));
      if (!wp || !wf)
        die("calloc", ILB_ENOMEM);
      setup(wp, t, pp, wl, 7);
      setup(wf, t, pf, -1, 7);
      /* warm: fill the index past its capacity */
      uint64_t warm = (uint64_t)g_table * 2 / g_blocks / (uint64_t)t + 1000;
      measure(wp, t, warm);
      ilb_prefix_stats s0;
      memset(&s0, 0, sizeof s0);
      s0.struct_size = sizeof s0;
      ilb_pool_prefix_stats(&s0, pp);
      double np[101], nf[101];
      for (uint32_t r = 0; r < g_reps; r++) {
        np[r] = measure(wp, t, g_iters);
        nf[r] = measure(wf, t, g_iters);
      }
      ilb_prefix_stats s1;
      memset(&s1, 0, sizeof s1);
      s1.struct_size = sizeof s1;
      ilb_pool_prefix_stats(&s1, pp);
      qsort(np, g_reps, sizeof(double), cmp_double);
      qsort(nf, g_reps, sizeof(double), cmp_double);
      double mp = np[g_reps / 2], mf = nf[g_reps / 2];
      double blocks = (double)(s1.blocks - s0.blocks);
      printf("BENCH policy=prefix n=%u threads=%d blocks=%u workload=%s "
             "ns=%.1f floor_ns=%.1f ratio=%.2f hit=%.3f\n",
             g_n, t, g_blocks, wname[wl], mp, mf, mp / mf,
             blocks > 0 ? (double)(s1.matched_blocks - s0.matched_blocks) /
                              blocks
                        : 0.0);
      printf("# %s t=%d: entries %llu of %llu, recorded %llu, evicted %llu, "
             "dropped %llu (during the measures)\n",
             wname[wl], t, (unsigned long long)s1.entries,
             (unsigned long long)s1.capacity,
             (unsigned long long)(s1.recorded - s0.recorded),
             (unsigned long long)(s1.evicted - s0.evicted),
             (unsigned long long)(s1.dropped - s0.dropped));
      if (k == 0 && !strncmp(g_workloads, wname[wl], strlen(wname[wl])))
        printf("BENCH policy=prefix table_blocks=%lld capacity=%llu "
               "bytes=%llu bytes_per_entry=%.1f\n",
               (long long)g_table, (unsigned long long)s1.capacity,
               (unsigned long long)s1.memory_bytes,
               (double)s1.memory_bytes / (double)s1.capacity);
      fflush(stdout);
      teardown(wp, t);
      teardown(wf, t);
      free(wp);
      free(wf);
      ilb_pool_free(pp);
      ilb_pool_free(pf);
    }
  }
  return 0;
}
