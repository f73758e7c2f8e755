/* sim - the fleet simulator: replays a Mooncake-format trace through the
 * real library (public API only) against modelled replicas (replica.h),
 * one run per policy and offered load, and prints a comparison table with
 * one SIM line per row. Deterministic: the host clock is the simulation's
 * clock and every random draw comes from the seeded library generators.
 *
 *   build/bench/sim/sim [--trace PATH] [--policy all|NAME,...]
 *                       [--load 0.5,0.8,0.95] [--gateways G] [--seed S]
 *                       [--fleet h100:2,a100:2,l4:2,t4:2] [--scrape-ms 1000]
 *                       [--repeat K] [--quiet] [--bench]
 *
 * --bench: one run of p2c at load 0.8 with the trace repeated until at
 * least 1,000,000 requests on 64 replicas; prints
 * "BENCH sim requests=<n> replicas=<r> s=<x>".
 * SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <inferlb/inferlb.h>

#include "replica.h"
#include "trace.h"

#define MAX_REPLICAS 1024
#define MAX_GATEWAYS 16
#define PAGE_MAX 4096

/* ---- the clock ---------------------------------------------------------- */

static uint64_t sim_now;
static uint64_t sim_clock(void *ud) {
  (void)ud;
  return sim_now;
}

/* ---- events: a binary heap on (time, seq) --------------------------------- */

enum { EV_ARRIVAL, EV_REPLICA, EV_SCRAPE };

typedef struct event {
  uint64_t t, seq;
  uint32_t type, a;
} event;

typedef struct heap {
  event *e;
  size_t n, cap;
  uint64_t seq;
} heap;

static int ev_less(const event *x, const event *y) {
  return x->t < y->t || (x->t == y->t && x->seq < y->seq);
}

static void push(heap *h, uint64_t t, uint32_t type, uint32_t a) {
  if (h->n == h->cap) {
    h->cap = h->cap ? h->cap * 2 : 1024;
    h->e = realloc(h->e, h->cap * sizeof(*h->e));
    if (!h->e) {
      fprintf(stderr, "sim: out of memory\n");
      exit(2);
    }
  }
  event x = {t, h->seq++, type, a};
  size_t i = h->n++;
  while (i > 0 && ev_less(&x, &h->e[(i - 1) / 2])) {
    h->e[i] = h->e[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h->e[i] = x;
}

static event pop(heap *h) {
  event top = h->e[0], x = h->e[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n)
      break;
    if (c + 1 < h->n && ev_less(&h->e[c + 1], &h->e[c]))
      c++;
    if (!ev_less(&h->e[c], &x))
      break;
    h->e[i] = h->e[c];
    i = c;
  }
  if (h->n)
    h->e[i] = x;
  return top;
}

/* ---- configuration ------------------------------------------------------- */

typedef struct fleet {
  const sim_gpu *gpu[MAX_REPLICAS];
  uint32_t n;
} fleet;

static int parse_fleet(fleet *f, const char *spec) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", spec);
  f->n = 0;
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    char *colon = strchr(tok, ':');
    long count = 1;
    if (colon) {
      *colon = 0;
      count = strtol(colon + 1, NULL, 10);
    }
    const sim_gpu *g = sim_gpu_find(tok);
    if (!g || count < 1 || f->n + count > MAX_REPLICAS)
      return -1;
    for (long i = 0; i < count; i++)
      f->gpu[f->n++] = g;
  }
  return f->n ? 0 : -1;
}

/* Requests per second a replica sustains on the trace's mean request:
 * its whole prefill (no cache reuse) plus its decode at full batch. The
 * fleet's capacity is the sum: the "offered load" 1.0. Cache reuse is
 * headroom a policy can win on top of it. */
static double replica_rate(const sim_gpu *g, double in_tokens,
                           double out_tokens) {
  double prefill_s = in_tokens / g->prefill_tok_s;
  double b = g->max_batch;
  double decode_tok_s = b / (g->step_base_s + g->step_per_seq_s * b);
  return 1.0 / (prefill_s + out_tokens / decode_tok_s);
}

/* ---- one run --------------------------------------------------------------- */

typedef struct req_state {
  sim_job job;
  ilb_retry_state retry;
  uint64_t ticket;
  uint32_t gateway, replica;
  uint8_t placed;
} req_state;

typedef struct result {
  double ttft_p50, ttft_p99, e2e_p99, tput, hit_rate, max_mean;
  uint64_t shed, failed, retried, done;
} result;

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static double pct(uint64_t *v, size_t n, double p) {
  if (!n)
    return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return (double)v[i] / 1e6;
}

static int run(const sim_trace *tr, const fleet *fl, int32_t policy,
               double scale, uint32_t n_gw, uint64_t seed, uint64_t scrape_ns,
               result *res) {
  memset(res, 0, sizeof *res);
  size_t n = tr->n;
  req_state *rs = calloc(n ? n : 1, sizeof(*rs));
  sim_replica *rep[MAX_REPLICAS];
  ilb_pool *gw[MAX_GATEWAYS];
  ilb_scrape *scr[MAX_GATEWAYS][64];
  uint32_t n_scr = fl->n < 64 ? fl->n : 64; /* gateways scrape the first 64 */
  double *area = calloc(fl->n, sizeof(double));
  uint32_t *inflight = calloc(fl->n, sizeof(uint32_t));
  uint64_t *last_change = calloc(fl->n, sizeof(uint64_t));
  uint64_t *ttft = malloc(sizeof(uint64_t) * (n ? n : 1));
  uint64_t *e2e = malloc(sizeof(uint64_t) * (n ? n : 1));
  if (!rs || !area || !inflight || !last_change || !ttft || !e2e)
    return -1;
  char ids[MAX_REPLICAS][16];
  for (uint32_t i = 0; i < fl->n; i++) {
    rep[i] = sim_replica_new(fl->gpu[i]);
    snprintf(ids[i], sizeof ids[i], "r%u", i);
  }
  sim_now = 0;
  for (uint32_t g = 0; g < n_gw; g++) {
    ilb_host h;
    ilb_host_init(&h);
    h.clock_ns = sim_clock;
    h.seed = seed * 1000003u + g;
    h.log_level = ILB_LOG_NONE;
    if (ilb_pool_new(&gw[g], &h))
      return -1;
    ilb_pool_set_option(gw[g], ILB_OPT_POLICY, policy);
    /* a gateway in front of an overloaded fleet holds many requests */
    ilb_pool_set_option(gw[g], ILB_OPT_MAX_IN_FLIGHT, 1 << 22);
    /* a replica whose KV cache cannot hold a prompt refuses it: retried
     * elsewhere, up to every GPU type */
    ilb_pool_set_option(gw[g], ILB_OPT_RETRY_MAX_ATTEMPTS, 4);
    ilb_pool_set_option(gw[g], ILB_OPT_RETRY_BUDGET_MIN_PER_S, 1000000);
    ilb_pool_set_option(gw[g], ILB_OPT_TELEMETRY_MAX_AGE_MS,
                        (int64_t)(3 * scrape_ns / 1000000));
    ilb_pool_batch_begin(gw[g]);
    for (uint32_t i = 0; i < fl->n; i++) {
      ilb_replica_spec sp;
      ilb_replica_spec_init(&sp);
      sp.id = ids[i];
      sp.weight = fl->gpu[i]->weight;
      sp.host_data = (void *)(uintptr_t)(i + 1);
      ilb_replica_add(gw[g], &sp);
    }
    ilb_pool_batch_commit(gw[g]);
    for (uint32_t i = 0; i < n_scr; i++)
      ilb_scrape_new(&scr[g][i], NULL, NULL);
  }

  heap h = {0};
  for (size_t i = 0; i < n; i++)
    push(&h, (uint64_t)((double)tr->req[i].arrival_ns * scale), EV_ARRIVAL,
         (uint32_t)i);
  for (uint32_t g = 0; g < n_gw; g++) /* gateways scrape out of phase */
    push(&h, scrape_ns * (g + 1) / n_gw, EV_SCRAPE, g);
  size_t outstanding = n, n_done = 0;
  uint64_t first = UINT64_MAX, last = 0, out_tokens = 0, hits = 0,
           queries = 0;
  char page[PAGE_MAX];
  sim_job *done[256];

  while (h.n && outstanding) {
    event ev = pop(&h);
    sim_now = ev.t;
    if (ev.type == EV_ARRIVAL) {
      req_state *q = &rs[ev.a];
      const sim_req *tq = &tr->req[ev.a];
      q->job.id = ev.a;
      q->job.input_tokens = tq->input_tokens;
      q->job.output_tokens = tq->output_tokens;
      q->job.blocks = tr->blocks + tq->blocks_off;
      q->job.n_blocks = tq->n_blocks;
      q->gateway = (uint32_t)(ev.a % n_gw);
      if (first == UINT64_MAX)
        first = sim_now;
      uint64_t key = tq->n_blocks ? q->job.blocks[0] : ev.a;
      ilb_request req;
      ilb_request_init(&req);
      req.key = &key;
      req.key_len = sizeof key;
      req.prompt_tokens = tq->input_tokens;
      req.output_tokens = tq->output_tokens;
      ilb_pick_result pr;
      ilb_pick_result_init(&pr);
      int rc = ilb_pick(&pr, gw[q->gateway], &req);
      if (rc) {
        res->shed++;
        outstanding--;
        continue;
      }
      uint32_t r = (uint32_t)((uintptr_t)pr.host_data - 1);
      q->ticket = pr.ticket;
      ilb_retry_state_init(&q->retry);
      int placed = 0;
      for (;;) {
        if (sim_replica_submit(rep[r], &q->job, sim_now)) {
          placed = 1;
          break;
        }
        /* refused (prompt too long for its KV cache): the library decides */
        ilb_outcome o;
        ilb_outcome_init(&o);
        o.status = ILB_OUTCOME_REFUSED;
        ilb_retry_result rr;
        ilb_retry_result_init(&rr);
        if (ilb_retry(&rr, gw[q->gateway], &q->retry, &req, q->ticket, &o) ||
            rr.verdict != ILB_RETRY_YES)
          break;
        res->retried++;
        q->ticket = rr.ticket;
        r = (uint32_t)((uintptr_t)rr.host_data - 1);
      }
      if (!placed) {
        res->failed++;
        outstanding--;
        continue;
      }
      q->replica = r;
      q->placed = 1;
      area[r] += (double)inflight[r] * (double)(sim_now - last_change[r]);
      last_change[r] = sim_now;
      inflight[r]++;
      push(&h, sim_replica_next(rep[r]), EV_REPLICA, r);
    } else if (ev.type == EV_REPLICA) {
      uint32_t r = ev.a;
      if (ev.t != sim_replica_next(rep[r]))
        continue; /* superseded */
      size_t got, more;
      do {
        more = sim_replica_advance(rep[r], sim_now, done, 256, &got);
        for (size_t k = 0; k < got; k++) {
          sim_job *j = done[k];
          req_state *q = &rs[j->id];
          const sim_req *tq = &tr->req[j->id];
          uint64_t arr = (uint64_t)((double)tq->arrival_ns * scale);
          ilb_outcome o;
          ilb_outcome_init(&o);
          o.latency_ns = j->done_ns - arr;
          o.ttft_ns = j->first_token_ns - arr;
          o.prompt_tokens = j->input_tokens;
          o.output_tokens = j->output_tokens;
          ilb_complete(gw[q->gateway], q->ticket, &o);
          ttft[n_done] = o.ttft_ns;
          e2e[n_done] = o.latency_ns;
          n_done++;
          out_tokens += j->output_tokens;
          hits += j->hit_blocks;
          queries += j->n_blocks;
          if (j->done_ns > last)
            last = j->done_ns;
          area[r] += (double)inflight[r] * (double)(sim_now - last_change[r]);
          last_change[r] = sim_now;
          inflight[r]--;
          outstanding--;
        }
      } while (more);
      if (sim_replica_next(rep[r]) != UINT64_MAX)
        push(&h, sim_replica_next(rep[r]), EV_REPLICA, r);
    } else { /* EV_SCRAPE: the gateway reads every replica's /metrics */
      uint32_t g = ev.a;
      for (uint32_t i = 0; i < n_scr; i++) {
        size_t len = sim_replica_metrics(rep[i], "m", page, sizeof page);
        ilb_telemetry t;
        ilb_telemetry_init(&t);
        if (ilb_telemetry_parse(&t, scr[g][i], page, len, sim_now) == 0)
          ilb_replica_report(gw[g], ids[i], &t);
      }
      push(&h, sim_now + scrape_ns, EV_SCRAPE, g);
    }
  }

  qsort(ttft, n_done, sizeof(uint64_t), cmp_u64);
  qsort(e2e, n_done, sizeof(uint64_t), cmp_u64);
  res->done = n_done;
  res->ttft_p50 = pct(ttft, n_done, 0.50);
  res->ttft_p99 = pct(ttft, n_done, 0.99);
  res->e2e_p99 = pct(e2e, n_done, 0.99);
  res->tput = last > first ? (double)out_tokens / ((double)(last - first) / 1e9)
                           : 0;
  res->hit_rate = queries ? (double)hits / (double)queries : 0;
  double sum = 0, max = 0;
  for (uint32_t i = 0; i < fl->n; i++) {
    area[i] += (double)inflight[i] * (double)(sim_now - last_change[i]);
    sum += area[i];
    if (area[i] > max)
      max = area[i];
  }
  res->max_mean = sum > 0 ? max / (sum / fl->n) : 0;

  for (uint32_t g = 0; g < n_gw; g++) {
    for (uint32_t i = 0; i < n_scr; i++)
      ilb_scrape_free(scr[g][i]);
    ilb_pool_free(gw[g]);
  }
  for (uint32_t i = 0; i < fl->n; i++)
    sim_replica_free(rep[i]);
  free(h.e);
  free(rs);
  free(area);
  free(inflight);
  free(last_change);
  free(ttft);
  free(e2e);
  return 0;
}

/* ---- main ------------------------------------------------------------------ */

static const char *stem(const char *path) {
  const char *s = strrchr(path, '/');
  s = s ? s + 1 : path;
  static char buf[64];
  snprintf(buf, sizeof buf, "%s", s);
  char *dot = strchr(buf, '.');
  if (dot)
    *dot = 0;
  return buf;
}

int main(int argc, char **argv) {
  const char *trace_path = "bench/data/mooncake/synthetic_trace.jsonl";
  const char *policies = "all", *loads = "0.5,0.8,0.95";
  const char *fleet_spec = "h100:2,a100:2,l4:2,t4:2";
  uint32_t n_gw = 1, repeat = 1;
  uint64_t seed = 1, scrape_ms = 1000;
  int quiet = 0, bench = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--trace") && v)
      trace_path = argv[++i];
    else if (!strcmp(a, "--policy") && v)
      policies = argv[++i];
    else if (!strcmp(a, "--load") && v)
      loads = argv[++i];
    else if (!strcmp(a, "--gateways") && v)
      n_gw = (uint32_t)strtoul(argv[++i], NULL, 10);
    else if (!strcmp(a, "--seed") && v)
      seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(a, "--fleet") && v)
      fleet_spec = argv[++i];
    else if (!strcmp(a, "--scrape-ms") && v)
      scrape_ms = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(a, "--repeat") && v)
      repeat = (uint32_t)strtoul(argv[++i], NULL, 10);
    else if (!strcmp(a, "--quiet"))
      quiet = 1;
    else if (!strcmp(a, "--bench"))
      bench = 1;
    else {
      fprintf(stderr, "usage: see the comment at the top of bench/sim/sim.c\n");
      return 2;
    }
  }
  if (n_gw < 1 || n_gw > MAX_GATEWAYS || repeat < 1 || scrape_ms < 1) {
    fprintf(stderr, "sim: --gateways 1..%d, --repeat >= 1, --scrape-ms >= 1\n",
            MAX_GATEWAYS);
    return 2;
  }
  fleet fl;
  if (bench)
    fleet_spec = "h100:16,a100:16,l4:16,t4:16";
  if (parse_fleet(&fl, fleet_spec)) {
    fprintf(stderr, "sim: bad --fleet %s (gpus: h100 a100 l4 t4)\n",
            fleet_spec);
    return 2;
  }
  sim_trace tr0 = {0}, tr = {0};
  char err[512];
  if (sim_trace_load(&tr0, trace_path, err, sizeof err)) {
    fprintf(stderr, "sim: %s\n", err);
    return 1;
  }
  if (!tr0.n) {
    fprintf(stderr, "sim: %s: no requests\n", trace_path);
    return 1;
  }
  uint64_t span = tr0.req[tr0.n - 1].arrival_ns - tr0.req[0].arrival_ns;
  if (bench && tr0.n * repeat < 1000000)
    repeat = (uint32_t)((1000000 + tr0.n - 1) / tr0.n);
  if (repeat > 1) { /* back to back, block ids kept apart per copy */
    uint64_t max_id = 0;
    for (size_t b = 0; b < tr0.n_blocks; b++)
      if (tr0.blocks[b] > max_id)
        max_id = tr0.blocks[b];
    tr.n = tr.cap = tr0.n * repeat;
    tr.n_blocks = tr.cap_blocks = tr0.n_blocks * repeat;
    tr.req = malloc(sizeof(sim_req) * tr.n);
    tr.blocks = malloc(sizeof(uint64_t) * (tr.n_blocks ? tr.n_blocks : 1));
    if (!tr.req || !tr.blocks)
      return 2;
    for (uint32_t c = 0; c < repeat; c++) {
      for (size_t i = 0; i < tr0.n; i++) {
        sim_req q = tr0.req[i];
        q.arrival_ns += c * (span + 1000000);
        q.blocks_off += c * tr0.n_blocks;
        tr.req[c * tr0.n + i] = q;
      }
      for (size_t b = 0; b < tr0.n_blocks; b++)
        tr.blocks[c * tr0.n_blocks + b] = tr0.blocks[b] + c * (max_id + 1);
    }
    span = tr.req[tr.n - 1].arrival_ns - tr.req[0].arrival_ns;
  } else {
    tr = tr0;
  }

  /* offered load: the fleet's capacity on the mean request */
  double in_mean = 0, out_mean = 0;
  for (size_t i = 0; i < tr.n; i++) {
    in_mean += tr.req[i].input_tokens;
    out_mean += tr.req[i].output_tokens;
  }
  in_mean /= (double)tr.n;
  out_mean /= (double)tr.n;
  size_t kv_total = 0;
  for (uint32_t i = 0; i < fl.n; i++)
    kv_total += fl.gpu[i]->kv_blocks;
  double ceiling = sim_reuse_lru(&tr, kv_total);
  double cap = 0;
  for (uint32_t i = 0; i < fl.n; i++)
    cap += replica_rate(fl.gpu[i], in_mean, out_mean);
  double natural = span ? (double)tr.n / ((double)span / 1e9) : cap;

  int32_t pol[32];
  size_t n_pol = 0;
  if (bench)
    policies = "p2c";
  if (!strcmp(policies, "all")) {
    for (int32_t p = 1; ilb_policy_name(p); p++)
      pol[n_pol++] = p;
  } else {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", policies);
    for (char *t = strtok(buf, ","); t && n_pol < 32; t = strtok(NULL, ",")) {
      if (ilb_policy_from_name(&pol[n_pol], t)) {
        fprintf(stderr, "sim: unknown policy %s\n", t);
        return 2;
      }
      n_pol++;
    }
  }
  double load[16];
  size_t n_load = 0;
  {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", bench ? "0.8" : loads);
    for (char *t = strtok(buf, ","); t && n_load < 16; t = strtok(NULL, ",")) {
      load[n_load] = strtod(t, NULL);
      if (!(load[n_load] > 0 && load[n_load] <= 10)) {
        fprintf(stderr, "sim: bad load %s\n", t);
        return 2;
      }
      n_load++;
    }
  }
  if (!quiet)
    printf("# %zu requests from %s, %u replicas (%s), capacity %.2f req/s "
           "(mean request %.0f in / %.0f out tokens, no reuse; an LRU as "
           "large as the fleet's KV cache would reuse %.0f%%), "
           "%u gateway(s), seed %" PRIu64 "\n"
           "%-22s %5s %10s %10s %10s %10s %7s %7s %8s %5s %6s\n",
           tr.n, trace_path, fl.n, fleet_spec, cap, in_mean, out_mean,
           ceiling * 100, n_gw, seed, "policy", "load", "ttft_p50", "ttft_p99",
           "e2e_p99", "tok/s", "hit", "ceiling", "max/mean", "shed",
           "failed");
  for (size_t li = 0; li < n_load; li++) {
    for (size_t pi = 0; pi < n_pol; pi++) {
      result r;
      double scale = natural / (load[li] * cap);
      struct timespec t0, t1;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      if (run(&tr, &fl, pol[pi], scale, n_gw, seed, scrape_ms * 1000000,
              &r)) {
        fprintf(stderr, "sim: out of memory\n");
        return 2;
      }
      clock_gettime(CLOCK_MONOTONIC, &t1);
      const char *name = ilb_policy_name(pol[pi]);
      if (!quiet)
        printf("%-22s %5.2f %10.1f %10.1f %10.1f %10.0f %7.3f %7.3f %8.2f "
               "%5" PRIu64 " %6" PRIu64 "\n",
               name, load[li], r.ttft_p50, r.ttft_p99, r.e2e_p99, r.tput,
               r.hit_rate, ceiling, r.max_mean, r.shed, r.failed);
      printf("SIM policy=%s workload=%s load=%.2f gateways=%u "
             "ttft_p50_ms=%.1f ttft_p99_ms=%.1f e2e_p99_ms=%.1f "
             "tput_tok_s=%.0f hit_rate=%.3f hit_ceiling=%.3f "
             "max_mean_load=%.2f shed=%" PRIu64 " failed=%" PRIu64 "\n",
             name, stem(trace_path), load[li], n_gw, r.ttft_p50, r.ttft_p99,
             r.e2e_p99, r.tput, r.hit_rate, ceiling, r.max_mean, r.shed,
             r.failed);
      if (bench)
        printf("BENCH sim requests=%zu replicas=%u s=%.2f\n", tr.n, fl.n,
               (double)(t1.tv_sec - t0.tv_sec) +
                   (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
      fflush(stdout);
    }
  }
  if (tr.req != tr0.req) {
    free(tr.req);
    free(tr.blocks);
  }
  sim_trace_free(&tr0);
  return 0;
}
