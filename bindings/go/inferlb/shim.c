/* C half of the Go binding; see shim.h. */
#include "shim.h"

#include <string.h>

#include "_cgo_export.h"

/* See shim.h. depth counts the shim calls active on this thread (nested
 * through callbacks); panic is the first panic of the innermost one. */
static __thread struct {
  int depth;
  uintptr_t panic;
} ilbgo_tls;

int ilbgo_set_panic(uintptr_t handle) {
  if (ilbgo_tls.depth == 0 || ilbgo_tls.panic != 0)
    return 1;
  ilbgo_tls.panic = handle;
  return 0;
}

#define ILBGO_ENTER                                                          \
  uintptr_t ilbgo_saved = ilbgo_tls.panic;                                   \
  ilbgo_tls.panic = 0;                                                       \
  ilbgo_tls.depth++
#define ILBGO_LEAVE(ret)                                                     \
  do {                                                                       \
    (ret).panic = ilbgo_tls.panic;                                           \
    ilbgo_tls.panic = ilbgo_saved;                                           \
    ilbgo_tls.depth--;                                                       \
  } while (0)
#define ILBGO_WRAP(call)                                                     \
  ilbgo_ret ret;                                                             \
  ILBGO_ENTER;                                                               \
  ret.rc = (call);                                                           \
  ILBGO_LEAVE(ret);                                                          \
  return ret

/* Trampolines: the library calls these, they call the exported Go functions
 * with the user data as the integer it is (a cgo.Handle). */
static uint64_t ilbgo_tr_clock(void *user_data) {
  return goIlbClock((uintptr_t)user_data);
}

static void ilbgo_tr_event(const ilb_event *event, void *user_data) {
  goIlbEvent((ilb_event *)event, (uintptr_t)user_data);
}

static void ilbgo_tr_log(int32_t level, const char *msg, size_t len,
                         void *user_data) {
  goIlbLog(level, (char *)msg, len, (uintptr_t)user_data);
}

int ilbgo_pool_new(ilb_pool **pool_out, uintptr_t handle, int with_clock,
                   int with_log, int32_t log_level, uint64_t seed) {
  ilb_host host;
  int rc = ilb_host_init(&host);
  if (rc != 0)
    return rc;
  /* on_event is always set: the binding frees a replica's handle on its
   * ILB_EVENT_REPLICA_REMOVED. */
  host.on_event = ilbgo_tr_event;
  if (with_clock)
    host.clock_ns = ilbgo_tr_clock;
  if (with_log)
    host.log = ilbgo_tr_log;
  host.log_level = log_level;
  host.seed = seed;
  host.user_data = (void *)handle;
  return ilb_pool_new(pool_out, &host);
}

/* A request on the shim's stack. The model attribute's value must be a C
 * string: it is copied, with a NUL, into mbuf, or into heap (freed by
 * req_done) when longer. */
typedef struct ilbgo_req {
  ilb_request req;
  ilb_label attr;
  char *heap;
  char mbuf[128];
} ilbgo_req;

static int req_fill(ilbgo_req *r, const void *key, size_t key_len,
                    const void *blocks, size_t n_blocks, const void *prompt,
                    size_t prompt_len, const void *model, size_t model_len,
                    uint32_t prompt_tokens, uint32_t output_tokens,
                    int32_t priority) {
  ilb_request_init(&r->req);
  r->heap = NULL;
  r->req.key = key;
  r->req.key_len = key_len;
  r->req.block_hashes = (const uint64_t *)blocks;
  r->req.n_blocks = n_blocks;
  r->req.prompt = (const char *)prompt;
  r->req.prompt_len = prompt_len;
  r->req.prompt_tokens = prompt_tokens;
  r->req.output_tokens = output_tokens;
  r->req.priority = priority;
  if (model_len > 0) {
    char *m = r->mbuf;
    if (model_len >= sizeof(r->mbuf)) {
      m = r->heap = malloc(model_len + 1);
      if (!m)
        return ILB_ENOMEM;
    }
    memcpy(m, model, model_len);
    m[model_len] = '\0';
    r->attr.key = "model";
    r->attr.value = m;
    r->req.attrs = &r->attr;
    r->req.n_attrs = 1;
  }
  return 0;
}

static void req_done(ilbgo_req *r) { free(r->heap); }

ilbgo_pick_ret ilbgo_pick(uintptr_t pool, const void *key, size_t key_len,
                          const void *blocks, size_t n_blocks,
                          const void *prompt, size_t prompt_len,
                          const void *model, size_t model_len,
                          uint32_t prompt_tokens, uint32_t output_tokens,
                          int32_t priority) {
  ilbgo_pick_ret ret = {0, 0, 0, 0, NULL, 0};
  ilbgo_req r;
  ilb_pick_result res;
  ret.rc = req_fill(&r, key, key_len, blocks, n_blocks, prompt, prompt_len,
                    model, model_len, prompt_tokens, output_tokens, priority);
  if (ret.rc != 0)
    return ret;
  ilb_pick_result_init(&res);
  ILBGO_ENTER;
  ret.rc = ilb_pick(&res, (ilb_pool *)pool, &r.req);
  ILBGO_LEAVE(ret);
  req_done(&r);
  ret.ticket = res.ticket;
  ret.host_data = (uintptr_t)res.host_data;
  ret.replica_id = res.replica_id;
  ret.retry_after_ns = res.retry_after_ns;
  return ret;
}

ilbgo_ret ilbgo_complete(uintptr_t pool, uint64_t ticket, int32_t status,
                   int32_t http_status, uint64_t latency_ns, uint64_t ttft_ns,
                   uint32_t prompt_tokens, uint32_t output_tokens) {
  ilb_outcome out;
  ilb_outcome_init(&out);
  out.status = status;
  out.http_status = http_status;
  out.latency_ns = latency_ns;
  out.ttft_ns = ttft_ns;
  out.prompt_tokens = prompt_tokens;
  out.output_tokens = output_tokens;
  ILBGO_WRAP(ilb_complete((ilb_pool *)pool, ticket, &out));
}

ilbgo_ret ilbgo_replica_add(ilb_pool *pool, const char *id, uint32_t weight,
                      uint32_t capacity, const char *zone,
                      const ilb_label *labels, size_t n_labels,
                      uintptr_t host_data) {
  ilb_replica_spec spec;
  ilbgo_ret bad = {ilb_replica_spec_init(&spec), 0};
  if (bad.rc != 0)
    return bad;
  spec.id = id;
  spec.weight = weight;
  spec.capacity = capacity;
  spec.zone = zone;
  spec.labels = labels;
  spec.n_labels = n_labels;
  spec.host_data = (void *)host_data;
  ILBGO_WRAP(ilb_replica_add(pool, &spec));
}

ilbgo_ret ilbgo_pool_free(ilb_pool *pool) {
  ILBGO_WRAP((ilb_pool_free(pool), 0));
}

ilbgo_ret ilbgo_replica_remove(ilb_pool *pool, const char *id) {
  ILBGO_WRAP(ilb_replica_remove(pool, id));
}

ilbgo_ret ilbgo_replica_set_weight(ilb_pool *pool, const char *id,
                                   uint32_t weight) {
  ILBGO_WRAP(ilb_replica_set_weight(pool, id, weight));
}

ilbgo_ret ilbgo_replica_set_available(ilb_pool *pool, const char *id,
                                      int32_t available) {
  ILBGO_WRAP(ilb_replica_set_available(pool, id, available));
}

ilbgo_ret ilbgo_replica_get(ilb_replica_info *info, ilb_pool *pool,
                            const char *id) {
  ILBGO_WRAP(ilb_replica_get(info, pool, id));
}

ilbgo_ret ilbgo_pool_count(size_t *n, ilb_pool *pool) {
  ILBGO_WRAP(ilb_pool_count(n, pool));
}

ilbgo_ret ilbgo_pool_set_option(ilb_pool *pool, int32_t id, int64_t value) {
  ILBGO_WRAP(ilb_pool_set_option(pool, id, value));
}

ilbgo_ret ilbgo_pool_get_option(int64_t *v, const ilb_pool *pool, int32_t id) {
  ILBGO_WRAP(ilb_pool_get_option(v, pool, id));
}

ilbgo_ret ilbgo_pool_batch_begin(ilb_pool *pool) {
  ILBGO_WRAP(ilb_pool_batch_begin(pool));
}

ilbgo_ret ilbgo_pool_batch_commit(ilb_pool *pool) {
  ILBGO_WRAP(ilb_pool_batch_commit(pool));
}

ilbgo_ret ilbgo_replica_report(ilb_pool *pool, const char *id,
                               const ilb_telemetry *t) {
  ILBGO_WRAP(ilb_replica_report(pool, id, t));
}

ilbgo_ret ilbgo_replica_telemetry(ilb_telemetry *t, ilb_pool *pool,
                                  const char *id) {
  ILBGO_WRAP(ilb_replica_telemetry(t, pool, id));
}

/* ---- health and failure handling (since 0.4) ---------------------------- */

ilbgo_ret ilbgo_health_report(ilb_pool *pool, const char *id, int32_t result) {
  ILBGO_WRAP(ilb_health_report(pool, id, result));
}

ilbgo_ret ilbgo_next_due(ilb_due *due, size_t cap, size_t *n_due,
                         uint64_t *next_ns, ilb_pool *pool) {
  ILBGO_WRAP(ilb_next_due(due, sizeof(ilb_due), cap, n_due, next_ns, pool));
}

ilbgo_ret ilbgo_replica_drain(ilb_pool *pool, const char *id, int32_t drain,
                              uint64_t timeout_ms) {
  ILBGO_WRAP(ilb_replica_drain(pool, id, drain, timeout_ms));
}

ilbgo_ret ilbgo_pool_health(ilb_pool_status *st, ilb_pool *pool) {
  ILBGO_WRAP(ilb_pool_health(st, pool));
}

ilbgo_retry_ret ilbgo_retry(uintptr_t pool, ilb_retry_state *st,
                            const void *key, size_t key_len,
                            const void *blocks, size_t n_blocks,
                            const void *prompt, size_t prompt_len,
                            const void *model, size_t model_len,
                            uint32_t prompt_tokens, uint32_t output_tokens,
                            int32_t priority, uint64_t ticket, int32_t status,
                            int32_t http_status, uint64_t latency_ns,
                            uint64_t ttft_ns, uint32_t out_prompt_tokens,
                            uint32_t out_output_tokens) {
  ilbgo_retry_ret ret = {0, 0, 0, 0, 0, 0, 0, NULL};
  ilbgo_req r;
  ilb_outcome out;
  ilb_retry_result res;
  ret.rc = req_fill(&r, key, key_len, blocks, n_blocks, prompt, prompt_len,
                    model, model_len, prompt_tokens, output_tokens, priority);
  if (ret.rc != 0)
    return ret; /* nothing done: the ticket stays valid */
  ilb_outcome_init(&out);
  out.status = status;
  out.http_status = http_status;
  out.latency_ns = latency_ns;
  out.ttft_ns = ttft_ns;
  out.prompt_tokens = out_prompt_tokens;
  out.output_tokens = out_output_tokens;
  ilb_retry_result_init(&res);
  ILBGO_ENTER;
  ret.rc = ilb_retry(&res, (ilb_pool *)pool, st, &r.req, ticket, &out);
  ILBGO_LEAVE(ret);
  req_done(&r);
  if (ret.rc == 0) {
    ret.verdict = res.verdict;
    ret.error = res.error;
    ret.backoff_ns = res.backoff_ns;
    ret.ticket = res.ticket;
    ret.host_data = (uintptr_t)res.host_data;
    ret.replica_id = res.replica_id;
  }
  return ret;
}

/* ---- prefix-cache-aware routing (since 0.5) ------------------------------ */

ilbgo_ret ilbgo_replica_kv_event(ilb_pool *pool, const char *id, int32_t type,
                                 uint32_t flags, uint64_t seq,
                                 const void *blocks, size_t n_blocks) {
  ilb_kv_event ev;
  ilbgo_ret bad = {ilb_kv_event_init(&ev), 0};
  if (bad.rc != 0)
    return bad;
  ev.type = type;
  ev.flags = flags;
  ev.seq = seq;
  ev.block_hashes = (const uint64_t *)blocks;
  ev.n_blocks = n_blocks;
  ILBGO_WRAP(ilb_replica_kv_event(pool, id, &ev));
}

ilbgo_ret ilbgo_pool_prefix_stats(ilb_prefix_stats *st, ilb_pool *pool) {
  ILBGO_WRAP(ilb_pool_prefix_stats(st, pool));
}
