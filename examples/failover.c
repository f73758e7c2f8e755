/* failover.c - a host's probe loop and retry loop against a simulated
 * fleet in which a replica dies and comes back.
 *
 * Four replicas serve 100 requests per second for two minutes of simulated
 * time (a fake clock: the run takes milliseconds). At 20 s gpu-2 dies: its
 * requests fail with connect errors and its probes get no answer. At 50 s
 * it restarts and loads its model (probes answer 503, "not ready") until
 * 70 s. The gateway retries failed requests on another replica, ejects
 * gpu-2 after three connect errors in a row, marks it unhealthy after two
 * failed probes, and takes it back through slow start once it is ready.
 *
 * Prints every event and the picks per replica in each 10 s window, and
 * exits 1 if a request failed for the client, if gpu-2 got picks while
 * dead after it was detected, or if it came back without a ramp.
 * SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <inferlb/inferlb.h>

#define N 4
#define SEC UINT64_C(1000000000)
#define MS UINT64_C(1000000)
#define END (120 * SEC)
#define WINDOWS 12

static uint64_t now_ns;
static const char *ids[N] = {"gpu-0", "gpu-1", "gpu-2", "gpu-3"};

static uint64_t fake_clock(void *ud) {
  (void)ud;
  return now_ns;
}

/* The world: gpu-2 is dead in [20 s, 50 s) and loading in [50 s, 70 s). */
enum { UP, DEAD, LOADING };
static int world(int r) {
  if (r != 2 || now_ns < 20 * SEC || now_ns >= 70 * SEC)
    return UP;
  return now_ns < 50 * SEC ? DEAD : LOADING;
}

static int index_of(const char *id) {
  for (int i = 0; i < N; i++)
    if (strcmp(id, ids[i]) == 0)
      return i;
  return -1;
}

static void on_event(const ilb_event *ev, void *ud) {
  (void)ud;
  const char *id = ev->replica_id ? ev->replica_id : "(pool)";
  printf("  %7.3f s  %-6s ", (double)ev->timestamp_ns / 1e9, id);
  switch (ev->type) {
  case ILB_EVENT_REPLICA_ADDED:
    printf("added");
    break;
  case ILB_EVENT_HEALTH:
    printf("health %s -> %s", ilb_health_name((int32_t)ev->old_value),
           ilb_health_name((int32_t)ev->new_value));
    break;
  case ILB_EVENT_EJECTED:
    printf("ejected (#%" PRIu64 ") for %.1f s", ev->old_value,
           (double)ev->new_value / 1e9);
    break;
  case ILB_EVENT_RESTORED:
    printf("restored after %.1f s", (double)ev->old_value / 1e9);
    break;
  case ILB_EVENT_PANIC:
    printf("panic %s", ev->new_value ? "on" : "off");
    break;
  case ILB_EVENT_BREAKER:
    printf("breaker %s -> %s", ilb_breaker_name((int32_t)ev->old_value),
           ilb_breaker_name((int32_t)ev->new_value));
    break;
  case ILB_EVENT_DRAINED:
    printf("drained");
    break;
  default:
    printf("event %d", (int)ev->type);
    break;
  }
  printf("  [%s]\n", ilb_reason_name(ev->reason));
}

static int check(int rc, const char *what) {
  if (rc < 0)
    fprintf(stderr, "failover: %s: %s\n", what, ilb_strerror(rc));
  return rc;
}

int main(void) {
  ilb_host host;
  ilb_host_init(&host);
  host.clock_ns = fake_clock;
  host.on_event = on_event;
  host.seed = 42;
  ilb_pool *pool;
  if (check(ilb_pool_new(&pool, &host), "ilb_pool_new"))
    return 1;
  const struct {
    int32_t opt;
    int64_t value;
  } opts[] = {
      {ILB_OPT_POLICY, ILB_POLICY_WEIGHTED_ROUND_ROBIN},
      {ILB_OPT_HEALTH_FALL, 2},
      {ILB_OPT_PROBE_INTERVAL_MS, 2000},
      {ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS, 1000},
      {ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 3},
      {ILB_OPT_SLOW_START_MS, 20000},
      {ILB_OPT_RETRY_MAX_ATTEMPTS, 3},
  };
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
    if (check(ilb_pool_set_option(pool, opts[i].opt, opts[i].value),
              "ilb_pool_set_option"))
      return 1;
  printf("events:\n");
  for (int i = 0; i < N; i++) {
    ilb_replica_spec spec;
    ilb_replica_spec_init(&spec);
    spec.id = ids[i];
    spec.weight = 1;
    if (check(ilb_replica_add(pool, &spec), "ilb_replica_add"))
      return 1;
  }

  uint64_t picks[WINDOWS][N] = {{0}};
  uint64_t requests = 0, lost = 0, dead_picks = 0, next_due = 0;
  for (now_ns = 0; now_ns < END; now_ns += 10 * MS) {
    /* the probe loop: run when the pool's deadline has come */
    if (now_ns >= next_due) {
      ilb_due due[N * 2];
      size_t n;
      if (check(ilb_next_due(due, sizeof due[0], N * 2, &n, &next_due, pool),
                "ilb_next_due"))
        return 1;
      for (size_t i = 0; i < n; i++) {
        if (due[i].kind != ILB_DUE_PROBE)
          continue;
        int w = world(index_of(due[i].replica_id));
        int32_t result = w == UP     ? ILB_PROBE_PASS
                         : w == DEAD ? ILB_PROBE_FAIL /* no answer */
                                     : ILB_PROBE_NOT_READY; /* 503 */
        check(ilb_health_report(pool, due[i].replica_id, result),
              "ilb_health_report");
      }
    }

    /* one request, with the retry loop */
    requests++;
    ilb_pick_result pick;
    ilb_pick_result_init(&pick);
    if (check(ilb_pick(&pick, pool, NULL), "ilb_pick")) {
      lost++;
      continue;
    }
    ilb_retry_state st;
    ilb_retry_state_init(&st);
    uint64_t ticket = pick.ticket;
    const char *id = pick.replica_id;
    for (;;) {
      int r = index_of(id);
      picks[now_ns / (10 * SEC)][r]++;
      /* detected dead: probes at 2 s intervals, fall 2, so by 25 s */
      if (world(r) == DEAD && now_ns >= 25 * SEC)
        dead_picks++;
      ilb_outcome out;
      ilb_outcome_init(&out);
      if (world(r) == UP) {
        out.status = ILB_OUTCOME_OK;
        out.http_status = 200;
        out.latency_ns = 50 * MS;
      } else {
        out.status = ILB_OUTCOME_CONNECT_ERROR;
      }
      ilb_retry_result rr;
      ilb_retry_result_init(&rr);
      if (check(ilb_retry(&rr, pool, &st, NULL, ticket, &out), "ilb_retry"))
        return 1;
      if (rr.verdict != ILB_RETRY_YES) {
        lost += out.status != ILB_OUTCOME_OK;
        break;
      }
      ticket = rr.ticket; /* a real host would wait rr.backoff_ns first */
      id = rr.replica_id;
    }
  }

  ilb_pool_status ps;
  memset(&ps, 0, sizeof ps);
  ps.struct_size = sizeof ps;
  check(ilb_pool_health(&ps, pool), "ilb_pool_health");
  printf("\npicks per replica, 10 s windows (gpu-2 dies at 20 s, is back "
         "and loading at 50 s, ready at 70 s):\n  window  ");
  for (int i = 0; i < N; i++)
    printf("%7s", ids[i]);
  printf("\n");
  for (int w = 0; w < WINDOWS; w++) {
    printf("  %3d-%3d ", w * 10, w * 10 + 10);
    for (int i = 0; i < N; i++)
      printf("%7" PRIu64, picks[w][i]);
    printf("\n");
  }
  printf("\nrequests %" PRIu64 ", failed for the client %" PRIu64
         ", retries %" PRIu64 ", denied by the retry budget %" PRIu64
         ", gpu-2 picks while known dead %" PRIu64 "\n",
         requests, lost, ps.retries, ps.retries_denied_budget, dead_picks);
  ilb_pool_free(pool);

  int ok = 1;
  if (lost) {
    fprintf(stderr, "failover: %" PRIu64 " requests failed\n", lost);
    ok = 0;
  }
  if (dead_picks) {
    fprintf(stderr, "failover: gpu-2 picked while dead\n");
    ok = 0;
  }
  /* slow start: the first window after it is ready takes less than a
   * full share, the last one a full share (+-10%) */
  if (!(picks[7][2] < picks[7][0] * 9 / 10 &&
        picks[11][2] * 10 >= picks[11][0] * 9)) {
    fprintf(stderr, "failover: no slow start ramp seen for gpu-2\n");
    ok = 0;
  }
  return ok ? 0 : 1;
}
