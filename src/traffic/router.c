/* PLACEHOLDER while the router is written (this session). */
#include "traffic/traffic.h"
int ilb__router_visit(ilb_router *r, const struct ilb__rvisit *v) { (void)r; (void)v; return ILB_EINVAL; }
