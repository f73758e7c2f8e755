/* Host defaults, allocation, logging, sized-struct checks.
 * SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/internal.h"

int ilb_host_init(ilb_host *host) {
  if (!host)
    return ILB_EINVAL;
  memset(host, 0, sizeof(*host));
  host->struct_size = sizeof(*host);
  host->log_level = ILB_LOG_WARN;
  return 0;
}

int ilb__host_copy(ilb_host *dst, const ilb_host *host) {
  ilb_host_init(dst);
  if (!host)
    return 0;
  int rc = ilb__check_struct_in(host, host->struct_size, sizeof(*host),
                                sizeof(*host));
  if (rc)
    return rc;
  ilb_host h = *host;
  h.struct_size = sizeof(h);
  if (!h.alloc != !h.free)
    return ILB_EINVAL;
  if (h.log_level < ILB_LOG_NONE || h.log_level > ILB_LOG_DEBUG)
    return ILB_EINVAL;
  if (h.reserved0 != 0) /* kept zero so a later version can use it */
    return ILB_EINVAL;
  *dst = h;
  return 0;
}

uint64_t ilb__now(const struct ilb_pool *p) { return ilb__host_now(&p->host); }

uint64_t ilb__now_fast(const struct ilb_pool *p) {
  if (p->host.clock_ns)
    return p->host.clock_ns(p->host.user_data);
#ifdef CLOCK_MONOTONIC_COARSE
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
#endif
  return ilb__host_now(&p->host);
}

uint64_t ilb__host_now(const ilb_host *h) {
  if (h->clock_ns)
    return h->clock_ns(h->user_data);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

void ilb__log(struct ilb_pool *p, int32_t level, const char *fmt, ...) {
  if (!p->host.log || level > p->host.log_level)
    return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  size_t len = (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1;
  p->host.log(level, buf, len, p->host.user_data);
}

void *ilb__malloc(const struct ilb__alloc *a, size_t size) {
  if (size == 0)
    size = 1;
  return a->alloc ? a->alloc(size, a->user_data) : malloc(size);
}

void *ilb__calloc(const struct ilb__alloc *a, size_t n, size_t size) {
  if (size && n > SIZE_MAX / size)
    return NULL;
  void *p = ilb__malloc(a, n * size);
  if (p)
    memset(p, 0, n * size);
  return p;
}

void ilb__free(const struct ilb__alloc *a, void *p) {
  if (!p)
    return;
  if (a->free)
    a->free(p, a->user_data);
  else
    free(p);
}

/* The original pointer is kept just before the aligned block. */
void *ilb__calloc_aligned(const struct ilb__alloc *a, size_t size) {
  if (size > SIZE_MAX - ILB__CACHELINE - sizeof(void *))
    return NULL;
  unsigned char *raw = ilb__malloc(a, size + ILB__CACHELINE + sizeof(void *));
  if (!raw)
    return NULL;
  uintptr_t u = (uintptr_t)(raw + sizeof(void *));
  u = (u + ILB__CACHELINE - 1) & ~(uintptr_t)(ILB__CACHELINE - 1);
  unsigned char *p = (unsigned char *)u;
  memcpy(p - sizeof(void *), &raw, sizeof(void *));
  /* written, not calloc'ed: a large block (a prefix index) is resident
   * from here, so picks never take its first-touch page faults */
  memset(p, 0, size);
  return p;
}

void ilb__free_aligned(const struct ilb__alloc *a, void *p) {
  if (!p)
    return;
  void *raw;
  memcpy(&raw, (unsigned char *)p - sizeof(void *), sizeof(void *));
  ilb__free(a, raw);
}

int ilb__check_struct_in(const void *p, size_t caller_size, size_t ours,
                         size_t min_size) {
  if (caller_size < min_size)
    return ILB_ESIZE;
  if (caller_size > ours) {
    if (caller_size - ours > 4096)
      return ILB_ESIZE;
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = ours; i < caller_size; i++)
      if (b[i])
        return ILB_ESIZE;
  }
  return 0;
}
