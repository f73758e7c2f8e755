/*
 * Small C helpers of the Go binding. Declarations only: this header is also
 * included by the cgo preamble of the file with //export functions.
 *
 * Why they exist:
 *  - host/replica user data: a runtime/cgo.Handle is an integer; C stores it
 *    in a void * (cast here, in C) so Go never converts an integer to an
 *    unsafe.Pointer and never hands C a Go pointer to keep.
 *  - ilb_pick/ilb_complete: the request/outcome structs are built on the C
 *    stack, so the request key -- a Go pointer passed as a plain argument,
 *    which cgo allows for the duration of the call -- is never stored in Go
 *    memory given to C, and nothing escapes to the Go heap per pick.
 */
#ifndef INFERLB_GO_SHIM_H
#define INFERLB_GO_SHIM_H

#include <stdint.h>
#include <stdlib.h>

#include <inferlb/inferlb.h>

typedef struct ilbgo_pick_ret {
  int rc;
  uint64_t ticket;
  uintptr_t host_data;
  const char *replica_id;
  uint64_t retry_after_ns;
} ilbgo_pick_ret;

int ilbgo_pool_new(ilb_pool **pool_out, uintptr_t handle, int with_clock,
                   int with_log, int32_t log_level, uint64_t seed);

ilbgo_pick_ret ilbgo_pick(uintptr_t pool, const void *key, size_t key_len,
                          uint32_t prompt_tokens, uint32_t output_tokens);

int ilbgo_complete(uintptr_t pool, uint64_t ticket, int32_t status,
                   int32_t http_status, uint64_t latency_ns, uint64_t ttft_ns,
                   uint32_t prompt_tokens, uint32_t output_tokens);

int ilbgo_replica_add(ilb_pool *pool, const char *id, uint32_t weight,
                      uint32_t capacity, const char *zone,
                      const ilb_label *labels, size_t n_labels,
                      uintptr_t host_data);

#endif
