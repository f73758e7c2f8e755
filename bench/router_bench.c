/*
 * router_bench - the cost of one ilb_router_pick() + ilb_router_complete()
 * pair, per router feature, against ilb_pick() + ilb_complete() on the same
 * pool (p2c, 16 replicas) in the same run: the router's own cost is the
 * difference. One thread; medians of --runs runs.
 *
 *   build/bench/router_bench [--quick] [--runs N] [--n PICKS]
 *
 * Workloads:
 *   pool      ilb_pick + ilb_complete, no router (the floor)
 *   model     model routing: attribute "model", two pools of the model
 *   canary    a 95/5 route split, a key per request (cohort hash)
 *   rules     9 header routes that do not match, then the canary split
 *   sticky    model routing, 4,096 sessions with sticky sessions on
 *   ratelimit model routing and a rate limit on "x-api-key" (1,024 keys)
 *   pair      prefill/decode: two picks under one ticket
 *
 * SPDX-License-Identifier: MIT
 */
#define _POSIX_C_SOURCE 200809L
#include <inferlb/inferlb.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check(int rc, const char *what) {
  if (rc) {
    fprintf(stderr, "router_bench: %s: %s\n", what, ilb_strerror(rc));
    exit(1);
  }
}

static ilb_pool *new_pool(const char *prefix, int n) {
  ilb_pool *p;
  check(ilb_pool_new(&p, NULL), "ilb_pool_new");
  for (int i = 0; i < n; i++) {
    char id[64];
    snprintf(id, sizeof id, "%s-%d", prefix, i);
    ilb_replica_spec s;
    ilb_replica_spec_init(&s);
    s.id = id;
    check(ilb_replica_add(p, &s), "ilb_replica_add");
  }
  return p;
}

static void add(ilb_router *r, const char *model, const char *version,
                int32_t role, int32_t policy) {
  ilb_pool *p = new_pool(version, 16);
  check(ilb_pool_set_option(p, ILB_OPT_POLICY, policy), "policy");
  ilb_router_pool_spec ps;
  ilb_router_pool_spec_init(&ps);
  ps.model = model;
  ps.version = version;
  ps.role = role;
  check(ilb_router_add_pool(r, &ps, p), "ilb_router_add_pool");
  ilb_pool_free(p);
}

enum { W_POOL, W_MODEL, W_CANARY, W_RULES, W_STICKY, W_RATE, W_PAIR, W_N };
static const char *const names[W_N] = {"pool",   "model",     "canary",
                                       "rules",  "sticky",    "ratelimit",
                                       "pair"};

static double run(int w, long n) {
  ilb_router *r;
  check(ilb_router_new(&r, NULL), "ilb_router_new");
  ilb_pool *alone = new_pool("alone", 16);
  if (w != W_STICKY)
    check(ilb_router_set_option(r, ILB_OPT_ROUTER_STICKY_ENTRIES, 0),
          "sticky off");
  if (w == W_PAIR) {
    add(r, "llama", "v1", ILB_ROLE_PREFILL, ILB_POLICY_P2C);
    add(r, "llama", "v1", ILB_ROLE_DECODE, ILB_POLICY_P2C);
  } else {
    add(r, "llama", "v1", ILB_ROLE_BOTH, ILB_POLICY_P2C);
    add(r, "llama", "v2", ILB_ROLE_BOTH, ILB_POLICY_P2C);
  }
  ilb_backend split[2] = {{"llama", "v1", 95, 0}, {"llama", "v2", 5, 0}};
  ilb_match miss[9];
  ilb_route routes[10];
  int nr = 0;
  if (w == W_RULES)
    for (; nr < 9; nr++) {
      static char vals[9][16];
      snprintf(vals[nr], sizeof vals[nr], "v%d", nr + 10);
      miss[nr] = (ilb_match){"x-model-version", vals[nr], ILB_MATCH_EXACT, 0};
      ilb_route_init(&routes[nr]);
      static char rn[9][16];
      snprintf(rn[nr], sizeof rn[nr], "r%d", nr);
      routes[nr].name = rn[nr];
      routes[nr].matches = &miss[nr];
      routes[nr].n_matches = 1;
      routes[nr].backends = split;
      routes[nr].n_backends = 1;
    }
  if (w == W_CANARY || w == W_RULES) {
    ilb_route_init(&routes[nr]);
    routes[nr].name = "canary";
    routes[nr].backends = split;
    routes[nr].n_backends = 2;
    nr++;
    check(ilb_router_set_routes(r, routes, (size_t)nr), "set_routes");
  }
  if (w == W_RATE) {
    ilb_rate_limit l;
    ilb_rate_limit_init(&l);
    l.name = "per-key";
    l.key_attr = "x-api-key";
    l.rate = 1000000000; /* never limiting: the cost of the check */
    l.burst = 1000000;
    check(ilb_router_set_rate_limits(r, &l, 1), "set_rate_limits");
  }
  char keys[4096][24];
  for (int i = 0; i < 4096; i++)
    snprintf(keys[i], sizeof keys[i], "user-%d", i);
  ilb_label attrs[2] = {{"model", "llama"}, {"x-api-key", NULL}};
  ilb_request req;
  ilb_request_init(&req);
  req.attrs = attrs;
  req.n_attrs = 2;
  ilb_route_result res;
  ilb_route_result_init(&res);
  ilb_pick_result pr;
  ilb_pick_result_init(&pr);
  double t0 = now_s();
  for (long i = 0; i < n; i++) {
    const char *k = keys[i & 4095];
    req.key = k;
    req.key_len = strlen(k);
    attrs[1].value = keys[i & 1023];
    if (w == W_POOL) {
      check(ilb_pick(&pr, alone, &req), "ilb_pick");
      check(ilb_complete(alone, pr.ticket, NULL), "ilb_complete");
    } else {
      check(ilb_router_pick(&res, r, &req), "ilb_router_pick");
      check(ilb_router_complete(r, res.ticket, NULL), "ilb_router_complete");
    }
  }
  double ns = (now_s() - t0) * 1e9 / (double)n;
  ilb_pool_free(alone);
  ilb_router_free(r);
  return ns;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  long n = 2000000;
  int runs = 5;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      n = 20000;
      runs = 1;
    } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
      n = atol(argv[++i]);
    } else {
      fprintf(stderr, "usage: router_bench [--quick] [--runs N] [--n PICKS]\n");
      return 2;
    }
  }
  if (runs < 1 || runs > 99 || n < 1)
    return 2;
  double med[W_N];
  for (int w = 0; w < W_N; w++) {
    double v[99];
    for (int k = 0; k < runs; k++)
      v[k] = run(w, n);
    qsort(v, (size_t)runs, sizeof v[0], cmp);
    med[w] = v[runs / 2];
  }
  for (int w = 0; w < W_N; w++)
    printf("BENCH router workload=%s ns_per_pick_complete=%.1f "
           "ratio_to_pool=%.2f runs=%d picks=%ld\n",
           names[w], med[w], med[w] / med[W_POOL], runs, n);
  return 0;
}
