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
 * Requests carry token estimates (heavy-tailed prompts: most are short, a
 * fifth are 2k-8k tokens) and their service time grows with them, which is
 * what least_tokens routes on. For composite, the host "scrapes" every
 * replica every SCRAPE_TICKS: it renders a vLLM-style /metrics page from
 * what the replica is serving, feeds it through ilb_scrape and reports the
 * result with ilb_replica_report -- the path a real gateway takes.
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
#include <string.h>

#define N_REQUESTS 10000u
#define TICK_NS 1000000u    /* one fake tick is 1 ms */
#define MAX_ARRIVALS 4u     /* 0..MAX_ARRIVALS requests arrive per tick */
#define SERVICE_MIN 20u     /* service time on the fastest replica, ticks */
#define SERVICE_SPAN 41u    /* ... uniform in SERVICE_MIN..MIN+SPAN-1 */
#define REF_WEIGHT 5u       /* the weight whose replica has that time */
#define MAX_PENDING 8192u
#define SEED 20240611u
#define N_SESSIONS 200u
#define SCRAPE_TICKS 50u    /* composite: a /metrics scrape every 50 ms */
#define KV_TOKENS_PER_WEIGHT 20000u /* KV-cache size, tokens per unit weight */

/* What the host keeps per replica; given to the pool as host_data. */
struct replica {
  const char *id;
  uint32_t weight;
  uint64_t picks;
  uint64_t completed;
  uint64_t latency_sum_ns;
  uint64_t in_flight_sum; /* summed over sampled ticks */
  uint64_t serving;       /* requests it holds now */
  uint64_t tokens;        /* their prompt + output tokens (its KV use) */
  ilb_scrape *scrape;     /* parser of its /metrics (composite only) */
};

static struct replica replicas[] = {
  {"a100-0", 5, 0, 0, 0, 0, 0, 0, NULL},
  {"a100-1", 5, 0, 0, 0, 0, 0, 0, NULL},
  {"l4-0", 2, 0, 0, 0, 0, 0, 0, NULL},
  {"t4-0", 1, 0, 0, 0, 0, 0, 0, NULL},
};
#define N_REPLICAS (sizeof(replicas) / sizeof(replicas[0]))

/* A request being served: the ticket to complete and when it is done. */
struct pending {
  uint64_t ticket;
  uint64_t tokens;
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

/* The pool's and the parsers' host: the fake clock, a fixed seed. */
static void make_host(ilb_host *host) {
  check(ilb_host_init(host), "ilb_host_init");
  host->clock_ns = fake_clock;
  host->user_data = &sim;
  host->seed = SEED;
}

static ilb_pool *make_pool(int32_t policy) {
  ilb_host host;
  ilb_replica_spec spec;
  ilb_pool *pool = NULL;
  size_t i;

  make_host(&host);
  check(ilb_pool_new(&pool, &host), "ilb_pool_new");
  check(ilb_pool_set_option(pool, ILB_OPT_POLICY, policy),
        "ilb_pool_set_option");
  /* least_tokens: here an output token costs 25 prompt tokens of service
   * time (output/8 ms against prompt/200 ms), so weigh it that way. */
  check(ilb_pool_set_option(pool, ILB_OPT_TOKEN_OUTPUT_PERCENT, 2500),
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
    p->replica->serving--;
    p->replica->tokens -= p->tokens;
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
  /* Tokens: a fifth of the prompts are long; service grows with both. */
  uint32_t prompt = rand_below(&sim.rng, 5) == 0
                        ? 2000 + rand_below(&sim.rng, 6001)
                        : 50 + rand_below(&sim.rng, 451);
  uint32_t output = 20 + rand_below(&sim.rng, 181);
  uint32_t service = SERVICE_MIN + prompt / 200 + output / 8 +
                     rand_below(&sim.rng, SERVICE_SPAN / 4);
  /* the smaller of two draws: low-numbered sessions are the busy ones */
  uint32_t a = rand_below(&sim.rng, N_SESSIONS);
  uint32_t b = rand_below(&sim.rng, N_SESSIONS);
  uint32_t session = a < b ? a : b;

  check(ilb_request_init(&req), "ilb_request_init");
  req.key = key;
  req.key_len = (size_t)snprintf(key, sizeof key, "session-%u", session);
  req.prompt_tokens = prompt;
  req.output_tokens = output;
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
  p->tokens = prompt + output;
  p->replica = r;
  r->serving++;
  r->tokens += p->tokens;
  p->start_tick = tick;
  /* Slower replica (smaller weight), longer hold; at least one tick. */
  p->done_tick = tick + (service * REF_WEIGHT + r->weight - 1) / r->weight;
}

/* composite: what a scrape of each replica's vLLM /metrics would return,
 * rendered from what it serves, parsed by ilb_scrape and reported. */
static void scrape_all(ilb_pool *pool) {
  char page[1024];
  size_t i;
  for (i = 0; i < N_REPLICAS; i++) {
    struct replica *r = &replicas[i];
    double kv = (double)r->tokens / (KV_TOKENS_PER_WEIGHT * r->weight);
    ilb_telemetry t;
    int n = snprintf(page, sizeof page,
                     "# HELP vllm:num_requests_running Number of requests in "
                     "model execution batches.\n"
                     "# TYPE vllm:num_requests_running gauge\n"
                     "vllm:num_requests_running{model_name=\"demo\"} %" PRIu64
                     "\n"
                     "vllm:num_requests_waiting{model_name=\"demo\"} 0\n"
                     "vllm:kv_cache_usage_perc{model_name=\"demo\"} %.4f\n",
                     r->serving, kv < 1 ? kv : 1.0);
    if (n < 0 || (size_t)n >= sizeof page) {
      fprintf(stderr, "demo: /metrics page too long\n");
      exit(1);
    }
    check(ilb_scrape_feed(r->scrape, page, (size_t)n), "ilb_scrape_feed");
    check(ilb_telemetry_init(&t), "ilb_telemetry_init");
    check(ilb_scrape_finish(&t, r->scrape, sim.now_ns), "ilb_scrape_finish");
    check(ilb_replica_report(pool, r->id, &t), "ilb_replica_report");
  }
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
    replicas[i].serving = replicas[i].tokens = 0;
    if (policy == ILB_POLICY_COMPOSITE) {
      ilb_host host; /* same clock as the pool: timestamps agree */
      make_host(&host);
      check(ilb_scrape_new(&replicas[i].scrape, NULL, &host),
            "ilb_scrape_new");
    }
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
    if (policy == ILB_POLICY_COMPOSITE && tick % SCRAPE_TICKS == 0)
      scrape_all(pool);
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
  for (i = 0; i < N_REPLICAS; i++) {
    ilb_scrape_free(replicas[i].scrape);
    replicas[i].scrape = NULL;
  }
}

int main(void) {
  int32_t policy;

  printf("inferlb %s demo: %u requests per policy on a fake clock "
         "(1 tick = 1 ms)\n",
         ilb_version_string(), N_REQUESTS);
  printf("0-%u arrivals per tick; prompts 50-500 tokens (a fifth "
         "2000-8000), outputs 20-200;\n"
         "service %u ms + prompt/200 + output/8 (+0-%u) ms at weight %u, "
         "x%u/weight elsewhere\n",
         MAX_ARRIVALS, SERVICE_MIN, SERVICE_SPAN / 4 - 1, REF_WEIGHT,
         REF_WEIGHT);
  printf("composite: each replica's vLLM /metrics scraped every %u ms\n",
         SCRAPE_TICKS);
  printf("%u sessions, the session id is the affinity key\n\n", N_SESSIONS);
  for (policy = ILB_POLICY_ROUND_ROBIN; policy <= ILB_POLICY_LEAST_TOKENS;
       policy++)
    run_policy(policy);
  return 0;
}
