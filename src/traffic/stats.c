/* PLACEHOLDER: replaced by the stats helper. */
#include "traffic/traffic.h"
int ilb_stats_prometheus(char *buf, size_t buf_size, size_t *len_out,
                         ilb_router *router, ilb_pool *pool) {
  (void)buf; (void)buf_size; (void)len_out; (void)router; (void)pool;
  return ILB_EINVAL;
}
