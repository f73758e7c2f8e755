/*
 * router.c - the seeds' traffic examples through one ilb_router:
 *   1. a 95/5 canary between two versions of a model (Envoy's
 *      runtime_fraction, the Gateway API HTTPRoute; Istio's 90/10 is the
 *      same with other weights), then a canary step to 80/20;
 *   2. header-based A/B: "x-model-version: v2" goes to v2 (Istio match);
 *   3. model paths: "/v1/models/mistral..." goes to the mistral pool;
 *   4. sticky conversations: a conversation id keeps its replica.
 * Exits 1 if routing does not behave as described.
 *
 *   cc router.c $(pkg-config --cflags --libs inferlb) -o router
 *
 * SPDX-License-Identifier: MIT
 */
#include <inferlb/inferlb.h>

#include <stdio.h>
#include <string.h>

static int fail(const char *what, int rc) {
  fprintf(stderr, "inferlb: %s: %s (%s)\n", what, ilb_strerror(rc),
          ilb_err_name(rc));
  return 1;
}

/* A pool of n replicas "<name>-0".. under (model, version) in router r. */
static int add_pool(ilb_router *r, const char *model, const char *version,
                    const char *name, int n) {
  ilb_pool *pool;
  int rc = ilb_pool_new(&pool, NULL);
  if (rc)
    return rc;
  for (int i = 0; i < n && !rc; i++) {
    char id[64];
    snprintf(id, sizeof id, "%s-%d", name, i);
    ilb_replica_spec spec;
    ilb_replica_spec_init(&spec);
    spec.id = id;
    rc = ilb_replica_add(pool, &spec);
  }
  ilb_router_pool_spec ps;
  ilb_router_pool_spec_init(&ps);
  ps.model = model;
  ps.version = version;
  if (!rc)
    rc = ilb_router_add_pool(r, &ps, pool);
  ilb_pool_free(pool); /* the router keeps its own reference */
  return rc;
}

/* Route one request: the model and version it went to (router-owned
 * strings), and a copy of the replica's id when replica_out is set. */
static int route(ilb_router *r, const ilb_label *attrs, size_t n_attrs,
                 const char *session, const char **model_out,
                 const char **version_out, char (*replica_out)[64]) {
  ilb_request req;
  ilb_request_init(&req);
  req.attrs = attrs;
  req.n_attrs = n_attrs;
  if (session) {
    req.key = session;
    req.key_len = strlen(session);
  }
  ilb_route_result res;
  ilb_route_result_init(&res);
  int rc = ilb_router_pick(&res, r, &req);
  if (rc)
    return rc;
  *model_out = res.model;
  *version_out = res.version;
  if (replica_out) /* res.replica_id is valid until the ticket completes */
    snprintf(*replica_out, sizeof *replica_out, "%s", res.replica_id);
  /* ... the host forwards the request to res.replica_id here ... */
  return ilb_router_complete(r, res.ticket, NULL);
}

int main(void) {
  ilb_router *r;
  int rc = ilb_router_new(&r, NULL);
  if (rc)
    return fail("ilb_router_new", rc);
  if ((rc = add_pool(r, "llama", "v1", "llama-v1", 4)) ||
      (rc = add_pool(r, "llama", "v2", "llama-v2", 2)) ||
      (rc = add_pool(r, "mistral", "", "mistral", 2)))
    return fail("add_pool", rc);

  /* Routes, in order: A/B by header, model by path, then the canary split
   * for llama (the default route of this gateway). */
  ilb_match ab = {"x-model-version", "v2", ILB_MATCH_EXACT, 0};
  ilb_backend v2_of_asked = {NULL, "v2", 1, 0}; /* the request's model, v2 */
  ilb_match path = {":path", "/v1/models/mistral", ILB_MATCH_PREFIX, 0};
  ilb_backend mistral = {"mistral", NULL, 1, 0};
  ilb_backend canary[2] = {{"llama", "v1", 95, 0}, {"llama", "v2", 5, 0}};
  ilb_route routes[3];
  for (int i = 0; i < 3; i++)
    ilb_route_init(&routes[i]);
  routes[0].name = "ab-header";
  routes[0].matches = &ab;
  routes[0].n_matches = 1;
  routes[0].backends = &v2_of_asked;
  routes[0].n_backends = 1;
  routes[1].name = "mistral-path";
  routes[1].matches = &path;
  routes[1].n_matches = 1;
  routes[1].backends = &mistral;
  routes[1].n_backends = 1;
  routes[2].name = "llama-canary";
  routes[2].backends = canary;
  routes[2].n_backends = 2;
  if ((rc = ilb_router_set_routes(r, routes, 3)))
    return fail("ilb_router_set_routes", rc);

  /* 1. the canary: about 5% of anonymous requests go to v2 */
  ilb_label llama = {"model", "llama"};
  const char *model, *version;
  char replica[64];
  int on_v2 = 0, n = 20000;
  for (int i = 0; i < n; i++) {
    if ((rc = route(r, &llama, 1, NULL, &model, &version, NULL)))
      return fail("pick", rc);
    on_v2 += strcmp(version, "v2") == 0;
  }
  printf("canary 95/5: %.1f%% of %d requests on llama v2\n",
         100.0 * on_v2 / n, n);
  if (on_v2 < n * 4 / 100 || on_v2 > n * 6 / 100)
    return 1;
  /* ... and a canary step: 80/20, at once for every thread */
  uint32_t step[2] = {80, 20};
  if ((rc = ilb_router_set_weights(r, "llama-canary", step, 2)))
    return fail("ilb_router_set_weights", rc);
  on_v2 = 0;
  for (int i = 0; i < n; i++) {
    if ((rc = route(r, &llama, 1, NULL, &model, &version, NULL)))
      return fail("pick", rc);
    on_v2 += strcmp(version, "v2") == 0;
  }
  printf("canary 80/20: %.1f%% on llama v2\n", 100.0 * on_v2 / n);
  if (on_v2 < n * 18 / 100 || on_v2 > n * 22 / 100)
    return 1;

  /* 2. A/B by header: always v2 */
  ilb_label hdr[2] = {{"model", "llama"}, {"x-model-version", "v2"}};
  for (int i = 0; i < 100; i++) {
    if ((rc = route(r, hdr, 2, NULL, &model, &version, NULL)))
      return fail("pick", rc);
    if (strcmp(version, "v2") != 0)
      return 1;
  }
  printf("x-model-version: v2 -> %s %s, 100 of 100\n", model, version);

  /* 3. model by path */
  ilb_label by_path = {":path", "/v1/models/mistral/completions"};
  if ((rc = route(r, &by_path, 1, NULL, &model, &version, NULL)))
    return fail("pick", rc);
  printf(":path /v1/models/mistral/completions -> %s\n", model);
  if (strcmp(model, "mistral") != 0)
    return 1;

  /* ... and an unknown model is an error, never a random pool: only the
   * canary route would match it, so drop the routes for this check */
  ilb_label unknown = {"model", "gpt-9"};
  if ((rc = ilb_router_set_routes(r, routes, 2)))
    return fail("ilb_router_set_routes", rc);
  rc = route(r, &unknown, 1, NULL, &model, &version, NULL);
  printf("model gpt-9 -> %s\n", ilb_err_name(rc));
  if (rc != ILB_ENOMODEL)
    return 1;

  /* 4. sticky conversations: by model routing (no route matches llama
   * now), each conversation keeps its version and its replica */
  for (int c = 0; c < 3; c++) {
    char conv[32], first[64] = "";
    snprintf(conv, sizeof conv, "conversation-%d", c);
    for (int turn = 0; turn < 5; turn++) {
      if ((rc = route(r, &llama, 1, conv, &model, &version, &replica)))
        return fail("pick", rc);
      if (turn == 0)
        snprintf(first, sizeof first, "%s", replica);
      else if (strcmp(first, replica) != 0)
        return 1;
    }
    printf("%s: 5 turns on %s\n", conv, first);
  }
  ilb_router_free(r);
  return 0;
}
