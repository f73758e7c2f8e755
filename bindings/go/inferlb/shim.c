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

/* A request on the shim's stack. The model and the zone must be C strings:
 * each is copied, with a NUL, into its buffer here, or into heap memory
 * (freed by req_done) when longer. The other attributes come from Go as
 * n_attrs pairs "key\0value\0" in one buffer (Go memory, read during the
 * call only): their labels point into it. */
#define ILBGO_ATTRS 16
typedef struct ilbgo_req {
  ilb_request req;
  ilb_label attr[1 + ILBGO_ATTRS]; /* the model, then the attributes */
  ilb_label *attr_heap;
  char *mheap, *zheap;
  char mbuf[128];
  char zbuf[64];
} ilbgo_req;

/* A copy of len bytes with a NUL: in buf when it fits, else malloc'd. */
static const char *cstr_copy(char *buf, size_t size, char **heap,
                             const void *s, size_t len) {
  char *d = buf;
  if (len >= size) {
    d = *heap = malloc(len + 1);
    if (!d)
      return NULL;
  }
  memcpy(d, s, len);
  d[len] = '\0';
  return d;
}

static void req_done(ilbgo_req *r) {
  free(r->mheap);
  free(r->zheap);
  free(r->attr_heap);
}

static int req_fill(ilbgo_req *r, const void *key, size_t key_len,
                    const void *blocks, size_t n_blocks, const void *prompt,
                    size_t prompt_len, const void *model, size_t model_len,
                    const void *attrs, size_t attrs_len, size_t n_attrs,
                    const void *zone, size_t zone_len,
                    uint32_t prompt_tokens, uint32_t output_tokens,
                    int32_t priority) {
  ilb_request_init(&r->req);
  r->mheap = r->zheap = NULL;
  r->attr_heap = NULL;
  r->req.key = key;
  r->req.key_len = key_len;
  r->req.block_hashes = (const uint64_t *)blocks;
  r->req.n_blocks = n_blocks;
  r->req.prompt = (const char *)prompt;
  r->req.prompt_len = prompt_len;
  r->req.prompt_tokens = prompt_tokens;
  r->req.output_tokens = output_tokens;
  r->req.priority = priority;
  size_t n = (model_len > 0) + n_attrs;
  ilb_label *l = r->attr;
  if (n > 1 + ILBGO_ATTRS) {
    l = r->attr_heap = malloc(n * sizeof(*l));
    if (!l)
      return ILB_ENOMEM;
  }
  size_t k = 0;
  if (model_len > 0) {
    l[k].key = "model";
    l[k].value = cstr_copy(r->mbuf, sizeof(r->mbuf), &r->mheap, model,
                           model_len);
    if (!l[k++].value) {
      req_done(r);
      return ILB_ENOMEM;
    }
  }
  const char *p = attrs, *end = p ? p + attrs_len : NULL;
  for (size_t i = 0; i < 2 * n_attrs; i++) { /* keys and values */
    const char *z = p < end ? memchr(p, '\0', (size_t)(end - p)) : NULL;
    if (!z) { /* the Go side always ends each string with a NUL */
      req_done(r);
      return ILB_EINVAL;
    }
    if (i % 2 == 0)
      l[k].key = p;
    else
      l[k++].value = p;
    p = z + 1;
  }
  if (n > 0) {
    r->req.attrs = l;
    r->req.n_attrs = n;
  }
  if (zone_len > 0) {
    r->req.zone = cstr_copy(r->zbuf, sizeof(r->zbuf), &r->zheap, zone,
                            zone_len);
    if (!r->req.zone) {
      req_done(r);
      return ILB_ENOMEM;
    }
  }
  return 0;
}

ilbgo_pick_ret ilbgo_pick(uintptr_t pool, const void *key, size_t key_len,
                          const void *blocks, size_t n_blocks,
                          const void *prompt, size_t prompt_len,
                          const void *model, size_t model_len,
                          const void *attrs, size_t attrs_len, size_t n_attrs,
                          const void *zone, size_t zone_len,
                          uint32_t prompt_tokens, uint32_t output_tokens,
                          int32_t priority) {
  ilbgo_pick_ret ret = {0, 0, 0, 0, NULL, 0};
  ilbgo_req r;
  ilb_pick_result res;
  ret.rc = req_fill(&r, key, key_len, blocks, n_blocks, prompt, prompt_len,
                    model, model_len, attrs, attrs_len, n_attrs, zone,
                    zone_len, prompt_tokens, output_tokens, priority);
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
                            const void *attrs, size_t attrs_len,
                            size_t n_attrs, const void *zone, size_t zone_len,
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
                    model, model_len, attrs, attrs_len, n_attrs, zone,
                    zone_len, prompt_tokens, output_tokens, priority);
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

/* ---- the router, autoscaling, stats (since 0.6) -------------------------- */

int ilbgo_router_new(ilb_router **router_out, uintptr_t handle,
                     int with_clock, int with_log, int32_t log_level,
                     uint64_t seed) {
  ilb_host host;
  int rc = ilb_host_init(&host);
  if (rc != 0)
    return rc;
  if (with_clock)
    host.clock_ns = ilbgo_tr_clock;
  if (with_log)
    host.log = ilbgo_tr_log;
  host.log_level = log_level;
  host.seed = seed;
  host.user_data = (void *)handle;
  return ilb_router_new(router_out, &host);
}

ilbgo_ret ilbgo_router_free(ilb_router *router) {
  ILBGO_WRAP((ilb_router_free(router), 0));
}

ilbgo_ret ilbgo_router_set_option(ilb_router *router, int32_t id,
                                  int64_t value) {
  ILBGO_WRAP(ilb_router_set_option(router, id, value));
}

ilbgo_ret ilbgo_router_get_option(int64_t *v, const ilb_router *router,
                                  int32_t id) {
  ILBGO_WRAP(ilb_router_get_option(v, router, id));
}

ilbgo_ret ilbgo_router_add_pool(ilb_router *router, ilb_pool *pool,
                                const char *model, const char *version,
                                const ilb_label *labels, size_t n_labels,
                                uint32_t weight, int32_t role) {
  ilb_router_pool_spec spec;
  ilbgo_ret bad = {ilb_router_pool_spec_init(&spec), 0};
  if (bad.rc != 0)
    return bad;
  spec.model = model;
  spec.version = version;
  spec.labels = labels;
  spec.n_labels = n_labels;
  spec.weight = weight;
  spec.role = role;
  ILBGO_WRAP(ilb_router_add_pool(router, &spec, pool));
}

ilbgo_ret ilbgo_router_remove_pool(ilb_router *router, const char *model,
                                   const char *version) {
  ILBGO_WRAP(ilb_router_remove_pool(router, model, version));
}

ilbgo_ret ilbgo_router_set_routes(ilb_router *router, const ilb_route *routes,
                                  size_t n) {
  ILBGO_WRAP(ilb_router_set_routes(router, routes, n));
}

ilbgo_ret ilbgo_router_set_weights(ilb_router *router, const char *name,
                                   const uint32_t *weights, size_t n) {
  ILBGO_WRAP(ilb_router_set_weights(router, name, weights, n));
}

ilbgo_ret ilbgo_router_set_rate_limits(ilb_router *router,
                                       const ilb_rate_limit *limits,
                                       size_t n) {
  ILBGO_WRAP(ilb_router_set_rate_limits(router, limits, n));
}

ilbgo_route_ret ilbgo_router_pick(uintptr_t router, int with_req,
                                  const void *key, size_t key_len,
                                  const void *blocks, size_t n_blocks,
                                  const void *prompt, size_t prompt_len,
                                  const void *model, size_t model_len,
                                  const void *attrs, size_t attrs_len,
                                  size_t n_attrs, const void *zone,
                                  size_t zone_len, uint32_t prompt_tokens,
                                  uint32_t output_tokens, int32_t priority) {
  ilbgo_route_ret ret;
  ilbgo_req r;
  ilb_route_result res;
  memset(&ret, 0, sizeof(ret));
  if (with_req) {
    ret.rc = req_fill(&r, key, key_len, blocks, n_blocks, prompt, prompt_len,
                      model, model_len, attrs, attrs_len, n_attrs, zone,
                      zone_len, prompt_tokens, output_tokens, priority);
    if (ret.rc != 0)
      return ret;
  }
  ilb_route_result_init(&res);
  ILBGO_ENTER;
  ret.rc = ilb_router_pick(&res, (ilb_router *)router,
                           with_req ? &r.req : NULL);
  ILBGO_LEAVE(ret);
  if (with_req)
    req_done(&r);
  ret.ticket = res.ticket;
  ret.host_data = (uintptr_t)res.host_data;
  ret.retry_after_ns = res.retry_after_ns;
  ret.pool = (uintptr_t)res.pool;
  ret.route = res.route;
  ret.backend = res.backend;
  ret.prefill_host_data = (uintptr_t)res.prefill_host_data;
  ret.prefill_pool = (uintptr_t)res.prefill_pool;
  ret.mirror_ticket = res.mirror_ticket;
  ret.mirror_host_data = (uintptr_t)res.mirror_host_data;
  ret.mirror_pool = (uintptr_t)res.mirror_pool;
  ret.sticky = res.sticky;
  return ret;
}

static void outcome_fill(ilb_outcome *out, int32_t status,
                         int32_t http_status, uint64_t latency_ns,
                         uint64_t ttft_ns, uint32_t prompt_tokens,
                         uint32_t output_tokens) {
  ilb_outcome_init(out);
  out->status = status;
  out->http_status = http_status;
  out->latency_ns = latency_ns;
  out->ttft_ns = ttft_ns;
  out->prompt_tokens = prompt_tokens;
  out->output_tokens = output_tokens;
}

ilbgo_ret ilbgo_router_complete(uintptr_t router, uint64_t ticket,
                                int32_t status, int32_t http_status,
                                uint64_t latency_ns, uint64_t ttft_ns,
                                uint32_t prompt_tokens,
                                uint32_t output_tokens) {
  ilb_outcome out;
  outcome_fill(&out, status, http_status, latency_ns, ttft_ns, prompt_tokens,
               output_tokens);
  ILBGO_WRAP(ilb_router_complete((ilb_router *)router, ticket, &out));
}

ilbgo_ret ilbgo_router_complete_pair(
    uintptr_t router, uint64_t ticket, int32_t p_status, int32_t p_http,
    uint64_t p_latency_ns, uint64_t p_ttft_ns, uint32_t p_prompt_tokens,
    uint32_t p_output_tokens, int32_t d_status, int32_t d_http,
    uint64_t d_latency_ns, uint64_t d_ttft_ns, uint32_t d_prompt_tokens,
    uint32_t d_output_tokens) {
  ilb_outcome po, dout;
  outcome_fill(&po, p_status, p_http, p_latency_ns, p_ttft_ns,
               p_prompt_tokens, p_output_tokens);
  outcome_fill(&dout, d_status, d_http, d_latency_ns, d_ttft_ns,
               d_prompt_tokens, d_output_tokens);
  ILBGO_WRAP(
      ilb_router_complete_pair((ilb_router *)router, ticket, &po, &dout));
}

ilbgo_ret ilbgo_router_pin(ilb_router *router, const void *key,
                           size_t key_len, const char *model,
                           const char *version, const char *replica_id,
                           uint64_t ttl_ms) {
  ILBGO_WRAP(ilb_router_pin(router, key, key_len, model, version, replica_id,
                            ttl_ms));
}

ilbgo_ret ilbgo_pool_autoscale(ilb_autoscale *out, ilb_pool *pool) {
  ILBGO_WRAP(ilb_pool_autoscale(out, pool));
}

ilbgo_ret ilbgo_stats_prometheus(char *buf, size_t buf_size, size_t *len_out,
                                 ilb_router *router, ilb_pool *pool) {
  ILBGO_WRAP(ilb_stats_prometheus(buf, buf_size, len_out, router, pool));
}
