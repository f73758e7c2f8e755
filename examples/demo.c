/*
 * demo.c - every routing policy on the same simulated workload.
 *
 * Four replicas of different speed (weights 5, 5, 2, 1) serve 10000
 * requests per policy in a discrete-time loop driven by a fake clock, so the
 * run is deterministic: the same output on every machine. A request holds its
 * replica for a random service time scaled by 1/weight (a t4 takes five times
 * as long as an a100), which is what lets the least-load policies differ from
 * the blind ones: they send fewer requests to a replica that drains slowly.
 *
 * Every request belongs to one of N_SESSIONS conversations (a few are
 * much busier than the rest) and carries its session id as the affinity
 * key: the hashing policies keep a session on one replica (its KV cache
 * stays warm); "affinity" is the share of requests that went to the
 * replica which served their session's previous request.
 *
 * What it shows a host program:
 *   - a host struct with a clock callback (ilb_host.clock_ns + user_data),
 *   - a fixed seed, so every decision is reproducible,
 *   - host_data on each replica, returned by every pick,
 *   - the pick / complete lifecycle with an ilb_outcome carrying latency,
 *   - ilb_replica_get for the library's own view of a replica.
 *
 * SPDX-License-Identifier: MIT
 */
#include <inferlb/inferlb.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define N_REQUESTS 10000u
#define TICK_NS 1000000u    /* one fake tick is 1 ms */
#define MAX_ARRIVALS 4u     /* 0..MAX_ARRIVALS requests arrive per tick */
#define SERVICE_MIN 20u     /* service time on the fastest replica, ticks */
#define SERVICE_SPAN 41u    /* ... uniform in SERVICE_MIN..MIN+SPAN-1 */
#define REF_WEIGHT 5u       /* the weight whose replica has that time */
#define MAX_PENDING 8192u
#define SEED 20240611u
#define N_SESSIONS 200u

/* What the host keeps per replica; given to the pool as host_data. */
struct replica {
  const char *id;
  uint32_t weight;
  uint64_t picks;
  uint64_t completed;
  uint64_t latency_sum_ns;
  uint64_t in_flight_sum; /* summed over sampled ticks */
};

static struct replica replicas[] = {
  {"a100-0", 5, 0, 0, 0, 0},
  {"a100-1", 5, 0, 0, 0, 0},
  {"l4-0", 2, 0, 0, 0, 0},
  {"t4-0", 1, 0, 0, 0, 0},
};
#define N_REPLICAS (sizeof(replicas) / sizeof(replicas[0]))

/* A request being served: the ticket to complete and when it is done. */
struct pending {
  uint64_t ticket;
  uint64_t start_tick;
  uint64_t done_tick;
  struct replica *replica;
};

/* The simulation; its address is the pool's user_data. */
struct sim {
  uint64_t now_ns; /* what the fake clock returns */
  uint64_t rng;
  size_t n_pending;
  struct pending pending[MAX_PENDING];
};

static struct sim sim;

/* The replica that served each session's last request (NULL: none yet). */
static struct replica *last_replica[N_SESSIONS];
static uint32_t affine, repeat;

static uint64_t fake_clock(void *user_data) {
  const struct sim *s = user_data;
  return s->now_ns;
}

/* splitmix64: the demo's own generator for arrivals and service times. */
static uint64_t next_rand(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint32_t rand_below(uint64_t *state, uint32_t n) {
  return (uint32_t)(next_rand(state) % n);
}

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "demo: %s: %s (%s)\n", what, ilb_strerror(rc),
            ilb_err_name(rc));
    exit(1);
  }
}

static ilb_pool *make_pool(int32_t policy) {
  ilb_host host;
  ilb_replica_spec spec;
  ilb_pool *pool = NULL;
  size_t i;

  check(ilb_host_init(&host), "ilb_host_init");
  host.clock_ns = fake_clock;
  host.user_data = &sim;
  host.seed = SEED;
  check(ilb_pool_new(&pool, &host), "ilb_pool_new");
  check(ilb_pool_set_option(pool, ILB_OPT_POLICY, policy),
        "ilb_pool_set_option");

  /* One snapshot for all four replicas instead of four. */
  check(ilb_pool_batch_begin(pool), "ilb_pool_batch_begin");
  for (i = 0; i < N_REPLICAS; i++) {
    check(ilb_replica_spec_init(&spec), "ilb_replica_spec_init");
    spec.id = replicas[i].id;
    spec.weight = replicas[i].weight;
    spec.host_data = &replicas[i];
    check(ilb_replica_add(pool, &spec), "ilb_replica_add");
  }
  check(ilb_pool_batch_commit(pool), "ilb_pool_batch_commit");
  return pool;
}

/* Complete every request whose service time is over. */
static void complete_due(ilb_pool *pool, uint64_t tick) {
  size_t i = 0;
  while (i < sim.n_pending) {
    struct pending *p = &sim.pending[i];
    ilb_outcome outcome;
    if (p->done_tick > tick) {
      i++;
      continue;
    }
    check(ilb_outcome_init(&outcome), "ilb_outcome_init");
    outcome.latency_ns = (tick - p->start_tick) * TICK_NS;
    check(ilb_complete(pool, p->ticket, &outcome), "ilb_complete");
    p->replica->completed++;
    p->replica->latency_sum_ns += outcome.latency_ns;
    *p = sim.pending[--sim.n_pending]; /* swap-remove; recheck slot i */
  }
}

/* One new request: pick a replica and decide how long it holds it. */
static void arrive(ilb_pool *pool, uint64_t tick) {
  ilb_pick_result pick;
  struct replica *r;
  struct pending *p;
  ilb_request req;
  char key[32];
  uint32_t service = SERVICE_MIN + rand_below(&sim.rng, SERVICE_SPAN);
  /* the smaller of two draws: low-numbered sessions are the busy ones */
  uint32_t a = rand_below(&sim.rng, N_SESSIONS);
  uint32_t b = rand_below(&sim.rng, N_SESSIONS);
  uint32_t session = a < b ? a : b;

  check(ilb_request_init(&req), "ilb_request_init");
  req.key = key;
  req.key_len = (size_t)snprintf(key, sizeof key, "session-%u", session);
  check(ilb_pick_result_init(&pick), "ilb_pick_result_init");
  check(ilb_pick(&pick, pool, &req), "ilb_pick");
  r = pick.host_data;
  r->picks++;
  if (last_replica[session]) {
    repeat++;
    affine += last_replica[session] == r;
  }
  last_replica[session] = r;
  if (sim.n_pending == MAX_PENDING) {
    fprintf(stderr, "demo: more than %u requests pending\n", MAX_PENDING);
    exit(1);
  }
  p = &sim.pending[sim.n_pending++];
  p->ticket = pick.ticket;
  p->replica = r;
  p->start_tick = tick;
  /* Slower replica (smaller weight), longer hold; at least one tick. */
  p->done_tick = tick + (service * REF_WEIGHT + r->weight - 1) / r->weight;
}

static void sample_in_flight(ilb_pool *pool) {
  ilb_replica_info info;
  size_t i;
  for (i = 0; i < N_REPLICAS; i++) {
    info.struct_size = sizeof(info);
    check(ilb_replica_get(&info, pool, replicas[i].id), "ilb_replica_get");
    replicas[i].in_flight_sum += (uint64_t)info.in_flight;
  }
}

static void run_policy(int32_t policy) {
  ilb_pool *pool;
  uint64_t tick, sampled = 0, latency_sum = 0;
  uint32_t issued = 0, n, k;
  size_t i;

  for (i = 0; i < N_REPLICAS; i++) {
    replicas[i].picks = replicas[i].completed = 0;
    replicas[i].latency_sum_ns = replicas[i].in_flight_sum = 0;
  }
  sim.rng = SEED; /* every policy sees the same arrivals and service times */
  sim.n_pending = 0;
  sim.now_ns = 0;
  for (i = 0; i < N_SESSIONS; i++)
    last_replica[i] = NULL;
  affine = repeat = 0;
  pool = make_pool(policy);

  for (tick = 0; issued < N_REQUESTS || sim.n_pending > 0; tick++) {
    sim.now_ns = tick * TICK_NS;
    complete_due(pool, tick);
    if (issued < N_REQUESTS) {
      n = rand_below(&sim.rng, MAX_ARRIVALS + 1);
      for (k = 0; k < n && issued < N_REQUESTS; k++, issued++)
        arrive(pool, tick);
      sample_in_flight(pool); /* the load while requests keep arriving */
      sampled++;
    }
  }

  for (i = 0; i < N_REPLICAS; i++)
    latency_sum += replicas[i].latency_sum_ns;
  printf("policy %s (mean latency %.1f ms, affinity %.1f%%)\n",
         ilb_policy_name(policy), (double)latency_sum / N_REQUESTS / 1e6,
         repeat ? 100.0 * affine / repeat : 0.0);
  printf("  %-8s %6s %7s %15s %13s\n", "replica", "weight", "share",
         "mean in-flight", "mean latency");
  for (i = 0; i < N_REPLICAS; i++) {
    const struct replica *r = &replicas[i];
    printf("  %-8s %6" PRIu32 " %6.1f%% %15.1f %10.1f ms\n", r->id, r->weight,
           100.0 * (double)r->picks / N_REQUESTS,
           (double)r->in_flight_sum / (double)sampled,
           r->completed ? (double)r->latency_sum_ns / (double)r->completed / 1e6
                        : 0.0);
  }
  printf("\n");
  ilb_pool_free(pool);
}

int main(void) {
  int32_t policy;

  printf("inferlb %s demo: %u requests per policy on a fake clock "
         "(1 tick = 1 ms)\n",
         ilb_version_string(), N_REQUESTS);
  printf("0-%u arrivals per tick; service %u-%u ms at weight %u, "
         "x%u/weight elsewhere\n\n",
         MAX_ARRIVALS, SERVICE_MIN, SERVICE_MIN + SERVICE_SPAN - 1, REF_WEIGHT,
         REF_WEIGHT);
  printf("%u sessions, the session id is the affinity key\n\n", N_SESSIONS);
  for (policy = ILB_POLICY_ROUND_ROBIN; policy <= ILB_POLICY_CHWBL; policy++)
    run_policy(policy);
  return 0;
}
