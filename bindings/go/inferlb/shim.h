/*
 * Small C helpers of the Go binding. Declarations only: this header is also
 * included by the cgo preamble of the file with //export functions.
 *
 * Why they exist:
 *  - host/replica user data: a runtime/cgo.Handle is an integer; C stores it
 *    in a void * (cast here, in C) so Go never converts an integer to an
 *    unsafe.Pointer and never hands C a Go pointer to keep.
 *  - ilb_pick/ilb_complete/ilb_retry/ilb_router_pick: the request/outcome
 *    structs are built on the C stack, so the request key, block hashes,
 *    prompt, model, attributes and zone -- Go pointers passed as plain
 *    arguments, which cgo allows for the duration of the call -- are never
 *    stored in Go memory given to C, and nothing escapes to the Go heap per
 *    pick. The model and the zone (C strings for the library) are copied
 *    with their NUL into stack buffers, or malloc'd memory when longer, for
 *    the call; the other attributes arrive as one Go buffer of
 *    "key\0value\0" pairs, which the labels built here point into.
 *  - ilb_replica_kv_event: the event is built on the C stack the same way.
 */
#ifndef INFERLB_GO_SHIM_H
#define INFERLB_GO_SHIM_H

#include <stdint.h>
#include <stdlib.h>

#include <inferlb/inferlb.h>

/* Callback panics. A trampoline whose Go callback panicked stores the
 * panic (a cgo.Handle) in a thread-local slot; every shim below clears that
 * slot before calling the library and hands what it holds afterwards back
 * to its Go caller in `panic` (then restores the caller's own slot, for
 * calls nested inside callbacks). Callbacks run on the thread of the call
 * that triggered them, so a panic reaches only the call it happened in. */
int ilbgo_set_panic(uintptr_t handle); /* 0: stored; 1: slot taken or no
                                          shim call on this thread */

typedef struct ilbgo_ret {
  int rc;
  uintptr_t panic; /* cgo.Handle of a callback's panic, or 0 */
} ilbgo_ret;

typedef struct ilbgo_pick_ret {
  int rc;
  uintptr_t panic;
  uint64_t ticket;
  uintptr_t host_data;
  const char *replica_id;
  uint64_t retry_after_ns;
} ilbgo_pick_ret;

int ilbgo_pool_new(ilb_pool **pool_out, uintptr_t handle, int with_clock,
                   int with_log, int32_t log_level, uint64_t seed);

/* The request's pointers (key, blocks, prompt, model, attrs, zone) are Go
 * memory read during the call only; model is model_len bytes, no NUL (0:
 * none), zone the same; attrs is n_attrs pairs "key\0value\0" in attrs_len
 * bytes. */
ilbgo_pick_ret ilbgo_pick(uintptr_t pool, const void *key, size_t key_len,
                          const void *blocks, size_t n_blocks,
                          const void *prompt, size_t prompt_len,
                          const void *model, size_t model_len,
                          const void *attrs, size_t attrs_len, size_t n_attrs,
                          const void *zone, size_t zone_len,
                          uint32_t prompt_tokens, uint32_t output_tokens,
                          int32_t priority);

ilbgo_ret ilbgo_complete(uintptr_t pool, uint64_t ticket, int32_t status,
                   int32_t http_status, uint64_t latency_ns, uint64_t ttft_ns,
                   uint32_t prompt_tokens, uint32_t output_tokens);

ilbgo_ret ilbgo_replica_add(ilb_pool *pool, const char *id, uint32_t weight,
                      uint32_t capacity, const char *zone,
                      const ilb_label *labels, size_t n_labels,
                      uintptr_t host_data);

ilbgo_ret ilbgo_pool_free(ilb_pool *pool);
ilbgo_ret ilbgo_replica_remove(ilb_pool *pool, const char *id);
ilbgo_ret ilbgo_replica_set_weight(ilb_pool *pool, const char *id,
                                   uint32_t weight);
ilbgo_ret ilbgo_replica_set_available(ilb_pool *pool, const char *id,
                                      int32_t available);
ilbgo_ret ilbgo_replica_get(ilb_replica_info *info, ilb_pool *pool,
                            const char *id);
ilbgo_ret ilbgo_pool_count(size_t *n, ilb_pool *pool);
ilbgo_ret ilbgo_pool_set_option(ilb_pool *pool, int32_t id, int64_t value);
ilbgo_ret ilbgo_pool_get_option(int64_t *v, const ilb_pool *pool, int32_t id);
ilbgo_ret ilbgo_pool_batch_begin(ilb_pool *pool);
ilbgo_ret ilbgo_pool_batch_commit(ilb_pool *pool);
ilbgo_ret ilbgo_replica_report(ilb_pool *pool, const char *id,
                               const ilb_telemetry *t);
ilbgo_ret ilbgo_replica_telemetry(ilb_telemetry *t, ilb_pool *pool,
                                  const char *id);

/* Health and failure handling (since 0.4). */
ilbgo_ret ilbgo_health_report(ilb_pool *pool, const char *id, int32_t result);
/* due: C memory of cap entries (NULL when cap is 0). */
ilbgo_ret ilbgo_next_due(ilb_due *due, size_t cap, size_t *n_due,
                         uint64_t *next_ns, ilb_pool *pool);
ilbgo_ret ilbgo_replica_drain(ilb_pool *pool, const char *id, int32_t drain,
                              uint64_t timeout_ms);
ilbgo_ret ilbgo_pool_health(ilb_pool_status *st, ilb_pool *pool);

typedef struct ilbgo_retry_ret {
  int rc;
  uintptr_t panic;
  int32_t verdict;
  int32_t error;
  uint64_t backoff_ns;
  uint64_t ticket;
  uintptr_t host_data;
  const char *replica_id;
} ilbgo_retry_ret;

/* st: Go memory without Go pointers, passed for the call only. The request
 * (as for ilbgo_pick) and the outcome are built on the C stack. */
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
                            uint32_t out_output_tokens);

/* Prefix-cache-aware routing (since 0.5). blocks: Go memory read during
 * the call only; the event is built on the C stack. */
ilbgo_ret ilbgo_replica_kv_event(ilb_pool *pool, const char *id, int32_t type,
                                 uint32_t flags, uint64_t seq,
                                 const void *blocks, size_t n_blocks);
ilbgo_ret ilbgo_pool_prefix_stats(ilb_prefix_stats *st, ilb_pool *pool);

/* The router, autoscaling, stats (since 0.6). The router's host has no
 * on_event (a router fires none); its user_data is the handle of its
 * callbacks. */
int ilbgo_router_new(ilb_router **router_out, uintptr_t handle,
                     int with_clock, int with_log, int32_t log_level,
                     uint64_t seed);
ilbgo_ret ilbgo_router_free(ilb_router *router);
ilbgo_ret ilbgo_router_set_option(ilb_router *router, int32_t id,
                                  int64_t value);
ilbgo_ret ilbgo_router_get_option(int64_t *v, const ilb_router *router,
                                  int32_t id);
/* Strings and labels: C memory (the router copies them). */
ilbgo_ret ilbgo_router_add_pool(ilb_router *router, ilb_pool *pool,
                                const char *model, const char *version,
                                const ilb_label *labels, size_t n_labels,
                                uint32_t weight, int32_t role);
ilbgo_ret ilbgo_router_remove_pool(ilb_router *router, const char *model,
                                   const char *version);
/* routes, limits: C memory built by the binding; weights: Go memory. */
ilbgo_ret ilbgo_router_set_routes(ilb_router *router, const ilb_route *routes,
                                  size_t n);
ilbgo_ret ilbgo_router_set_weights(ilb_router *router, const char *name,
                                   const uint32_t *weights, size_t n);
ilbgo_ret ilbgo_router_set_rate_limits(ilb_router *router,
                                       const ilb_rate_limit *limits,
                                       size_t n);

/* ilb_route_result without its strings: the binding takes ids, models and
 * versions from its own records (by host_data and pool). */
typedef struct ilbgo_route_ret {
  int rc;
  uintptr_t panic;
  uint64_t ticket;
  uintptr_t host_data;
  uint64_t retry_after_ns;
  uintptr_t pool;
  int32_t route;
  int32_t backend;
  uintptr_t prefill_host_data;
  uintptr_t prefill_pool;
  uint64_t mirror_ticket;
  uintptr_t mirror_host_data;
  uintptr_t mirror_pool;
  int32_t sticky;
} ilbgo_route_ret;

/* with_req 0: no request (NULL); else as ilbgo_pick. */
ilbgo_route_ret ilbgo_router_pick(uintptr_t router, int with_req,
                                  const void *key, size_t key_len,
                                  const void *blocks, size_t n_blocks,
                                  const void *prompt, size_t prompt_len,
                                  const void *model, size_t model_len,
                                  const void *attrs, size_t attrs_len,
                                  size_t n_attrs, const void *zone,
                                  size_t zone_len, uint32_t prompt_tokens,
                                  uint32_t output_tokens, int32_t priority);
ilbgo_ret ilbgo_router_complete(uintptr_t router, uint64_t ticket,
                                int32_t status, int32_t http_status,
                                uint64_t latency_ns, uint64_t ttft_ns,
                                uint32_t prompt_tokens,
                                uint32_t output_tokens);
ilbgo_ret ilbgo_router_complete_pair(
    uintptr_t router, uint64_t ticket, int32_t p_status, int32_t p_http,
    uint64_t p_latency_ns, uint64_t p_ttft_ns, uint32_t p_prompt_tokens,
    uint32_t p_output_tokens, int32_t d_status, int32_t d_http,
    uint64_t d_latency_ns, uint64_t d_ttft_ns, uint32_t d_prompt_tokens,
    uint32_t d_output_tokens);
/* key: Go memory read during the call. */
ilbgo_ret ilbgo_router_pin(ilb_router *router, const void *key,
                           size_t key_len, const char *model,
                           const char *version, const char *replica_id,
                           uint64_t ttl_ms);
ilbgo_ret ilbgo_pool_autoscale(ilb_autoscale *out, ilb_pool *pool);
/* buf: Go memory written during the call (no Go pointers in it). */
ilbgo_ret ilbgo_stats_prometheus(char *buf, size_t buf_size, size_t *len_out,
                                 ilb_router *router, ilb_pool *pool);

#endif
