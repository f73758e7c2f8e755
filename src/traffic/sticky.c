/* PLACEHOLDER: replaced by the sticky/ratelimit helper. */
#include "traffic/traffic.h"
int ilb__sticky_new(struct ilb__sticky **out, const struct ilb__alloc *a,
                    uint32_t entries) { (void)out; (void)a; (void)entries; return ILB_ENOMEM; }
void ilb__sticky_free(struct ilb__sticky *t, const struct ilb__alloc *a) { (void)t; (void)a; }
int ilb__sticky_get(struct ilb__sticky *t, uint64_t h, uint64_t now,
                    uint64_t *val_out, int *pinned_out) { (void)t; (void)h; (void)now; (void)val_out; (void)pinned_out; return 0; }
int ilb__sticky_put(struct ilb__sticky *t, uint64_t h, uint64_t val,
                    uint64_t expires, int pinned, int wait) { (void)t; (void)h; (void)val; (void)expires; (void)pinned; (void)wait; return 0; }
int ilb__sticky_del(struct ilb__sticky *t, uint64_t h) { (void)t; (void)h; return 0; }
