/* PLACEHOLDER: replaced by the autoscaling helper. */
#include "traffic/traffic.h"
void ilb__autoscale_free(struct ilb_pool *p) { (void)p; }
int ilb_pool_autoscale(ilb_autoscale *out, ilb_pool *pool) {
  (void)out; (void)pool;
  return ILB_EINVAL;
}
