/*
 * minimal.c - the shortest correct embedding of inferlb.
 *
 * Create a pool, add two replicas, pick one for a request, report how the
 * request went, free the pool. Every call returns 0 or a negative ILB_E*
 * code; ilb_strerror() turns it into text.
 *
 *   cc minimal.c $(pkg-config --cflags --libs inferlb) -o minimal
 *
 * SPDX-License-Identifier: MIT
 */
#include <inferlb/inferlb.h>

#include <stdio.h>

int main(void) {
  static const char *const ids[] = {"gpu-0", "gpu-1"};
  ilb_pool *pool = NULL;
  ilb_replica_spec spec;
  ilb_pick_result pick;
  ilb_outcome outcome;
  size_t i;
  int rc;

  rc = ilb_pool_new(&pool, NULL); /* NULL host: real clock, no callbacks */
  if (rc < 0)
    goto fail;

  for (i = 0; i < 2; i++) {
    ilb_replica_spec_init(&spec);
    spec.id = ids[i];
    spec.weight = 1;
    rc = ilb_replica_add(pool, &spec);
    if (rc < 0)
      goto fail;
  }

  ilb_pick_result_init(&pick);
  rc = ilb_pick(&pick, pool, NULL); /* NULL request: no attributes */
  if (rc < 0)
    goto fail;
  printf("send the request to %s\n", pick.replica_id);

  /* ... forward the request, stream the response back ... */

  ilb_outcome_init(&outcome); /* status ILB_OUTCOME_OK */
  outcome.latency_ns = 120u * 1000u * 1000u;
  rc = ilb_complete(pool, pick.ticket, &outcome);
  if (rc < 0)
    goto fail;

  ilb_pool_free(pool);
  return 0;

fail:
  fprintf(stderr, "inferlb: %s (%s)\n", ilb_strerror(rc), ilb_err_name(rc));
  ilb_pool_free(pool); /* NULL is fine */
  return 1;
}
