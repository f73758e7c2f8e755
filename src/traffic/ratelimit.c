/* PLACEHOLDER: replaced by the sticky/ratelimit helper. */
#include "traffic/traffic.h"
int ilb__rl_new(struct ilb__rlimit **out, const struct ilb__alloc *a,
                const ilb_rate_limit *cfg, uint32_t keys) { (void)out; (void)a; (void)cfg; (void)keys; return ILB_ENOMEM; }
void ilb__rl_free(struct ilb__rlimit *l, const struct ilb__alloc *a) { (void)l; (void)a; }
int ilb__rl_take(struct ilb__rlimit *l, uint64_t h, uint64_t now,
                 uint64_t *retry_after_ns) { (void)l; (void)h; (void)now; (void)retry_after_ns; return 0; }
void ilb__rl_give_back(struct ilb__rlimit *l, uint64_t h, uint64_t now) { (void)l; (void)h; (void)now; }
int ilb__rl_same(const struct ilb__rlimit *l, const ilb_rate_limit *cfg) { (void)l; (void)cfg; return 0; }
uint64_t ilb__rl_limited(const struct ilb__rlimit *l) { (void)l; return 0; }
uint64_t ilb__rl_evicted(const struct ilb__rlimit *l) { (void)l; return 0; }
