/*
 * Replica registry: add, remove, set_weight, get, and the events they fire.
 *
 * SPDX-License-Identifier: MIT
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <inferlb/inferlb.h>

#include "testutil.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

#define MAX_EVENTS 64

struct ev_rec {
  size_t struct_size;
  int32_t type;
  int32_t old_state;
  int32_t new_state;
  char id[ILB_ID_MAX + 1];
  int id_null;
  void *host_data;
  uint64_t old_value;
  uint64_t new_value;
  uint64_t ts;
  void *user_data;
};

struct ctx {
  ilb_pool *pool;
  uint64_t now;
  size_t n_events;
  struct ev_rec ev[MAX_EVENTS];

  /* Re-entrancy probe: when armed, the next event's callback calls back
   * into the pool and records what each call returned. */
  int armed;
  int probed;
  int rc_add, rc_remove, rc_set_weight, rc_set_option, rc_batch_begin;
  int rc_get;
  ilb_replica_info get_info;
  int rc_pick, rc_complete;
  char picked_id[ILB_ID_MAX + 1];
};

static uint64_t fake_clock(void *user_data) {
  return ((struct ctx *)user_data)->now;
}

static void probe_pool(struct ctx *c, const ilb_event *ev) {
  ilb_replica_spec spec;
  ilb_replica_spec_init(&spec);
  spec.id = "nested";
  c->rc_add = ilb_replica_add(c->pool, &spec);
  c->rc_remove = ilb_replica_remove(c->pool, ev->replica_id);
  c->rc_set_weight = ilb_replica_set_weight(c->pool, ev->replica_id, 999);
  c->rc_set_option =
      ilb_pool_set_option(c->pool, ILB_OPT_POLICY, ILB_POLICY_RANDOM);
  c->rc_batch_begin = ilb_pool_batch_begin(c->pool);

  memset(&c->get_info, 0, sizeof c->get_info);
  c->get_info.struct_size = sizeof c->get_info;
  c->rc_get = ilb_replica_get(&c->get_info, c->pool, ev->replica_id);

  ilb_pick_result res;
  ilb_pick_result_init(&res);
  c->rc_pick = ilb_pick(&res, c->pool, NULL);
  c->rc_complete = ILB_EUNKNOWN;
  if (c->rc_pick == ILB_OK) {
    snprintf(c->picked_id, sizeof c->picked_id, "%s", res.replica_id);
    c->rc_complete = ilb_complete(c->pool, res.ticket, NULL);
  }
}

static void record_event(const ilb_event *ev, void *user_data) {
  struct ctx *c = user_data;
  if (c->n_events < MAX_EVENTS) {
    struct ev_rec *r = &c->ev[c->n_events];
    r->struct_size = ev->struct_size;
    r->type = ev->type;
    r->old_state = ev->old_state;
    r->new_state = ev->new_state;
    r->id_null = ev->replica_id == NULL;
    snprintf(r->id, sizeof r->id, "%s", ev->replica_id ? ev->replica_id : "");
    r->host_data = ev->replica_host_data;
    r->old_value = ev->old_value;
    r->new_value = ev->new_value;
    r->ts = ev->timestamp_ns;
    r->user_data = user_data;
  }
  c->n_events++;
  if (c->armed && !c->probed) {
    c->probed = 1; /* once: a buggy nested add must not recurse forever */
    probe_pool(c, ev);
  }
}

static ilb_pool *new_pool_ctx(struct ctx *c) {
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.clock_ns = fake_clock;
  host.on_event = record_event;
  host.user_data = c;
  ilb_pool *pool = NULL;
  assert_rc(ilb_pool_new(&pool, &host), ILB_OK);
  assert_non_null(pool);
  track_pool(pool);
  c->pool = pool;
  return pool;
}

static ilb_pool *new_pool(void) {
  ilb_pool *pool = NULL;
  assert_rc(ilb_pool_new(&pool, NULL), ILB_OK);
  assert_non_null(pool);
  track_pool(pool);
  return pool;
}

static void spec_basic(ilb_replica_spec *spec, const char *id) {
  assert_rc(ilb_replica_spec_init(spec), ILB_OK);
  spec->id = id;
}

static size_t pool_count(ilb_pool *pool) {
  size_t n = (size_t)-1;
  assert_rc(ilb_pool_count(&n, pool), ILB_OK);
  return n;
}

static uint32_t weight_of(ilb_pool *pool, const char *id) {
  return get_info(pool, id).weight;
}

/* Picks once and completes; returns the id picked (static storage of ours). */
static const char *pick_id(ilb_pool *pool) {
  static char buf[ILB_ID_MAX + 1];
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);
  assert_non_null(res.replica_id);
  snprintf(buf, sizeof buf, "%s", res.replica_id);
  assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_OK);
  return buf;
}

static char *dup_str(const char *src) {
  size_t n = strlen(src);
  char *s = malloc(n + 1);
  assert_non_null(s);
  memcpy(s, src, n + 1);
  return s;
}

static char *repeat_char(char ch, size_t n) {
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, ch, n);
  s[n] = '\0';
  return s;
}

/* ------------------------------------------------------------------------ */
/* ilb_replica_add                                                           */
/* ------------------------------------------------------------------------ */

static void spec_init_defaults(void **state) {
  (void)state;
  ilb_replica_spec spec;
  memset(&spec, 0xAB, sizeof spec);
  assert_rc(ilb_replica_spec_init(&spec), ILB_OK);
  assert_int_equal(spec.struct_size, sizeof spec);
  assert_null(spec.id);
  assert_int_equal(spec.weight, 1);
  assert_int_equal(spec.capacity, 0);
  assert_null(spec.zone);
  assert_null(spec.labels);
  assert_int_equal(spec.n_labels, 0);
  assert_null(spec.host_data);
  assert_rc(ilb_replica_spec_init(NULL), ILB_EINVAL);
}

static void add_null_args(void **state) {
  (void)state;
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  ilb_replica_spec spec;
  spec_basic(&spec, "a");
  assert_rc(ilb_replica_add(NULL, &spec), ILB_EINVAL);
  assert_rc(ilb_replica_add(pool, NULL), ILB_EINVAL);
  spec.id = NULL;
  assert_rc(ilb_replica_add(pool, &spec), ILB_EINVAL);
  spec.id = "";
  assert_rc(ilb_replica_add(pool, &spec), ILB_EINVAL);
  assert_int_equal(pool_count(pool), 0);
  assert_int_equal(c.n_events, 0);
  free_pool(pool);
}

static void add_id_length_limit(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  char *max = repeat_char('m', ILB_ID_MAX);
  char *over = repeat_char('o', ILB_ID_MAX + 1);
  ilb_replica_spec spec;

  spec_basic(&spec, over);
  assert_rc(ilb_replica_add(pool, &spec), ILB_ETOOBIG);
  assert_int_equal(pool_count(pool), 0);

  spec_basic(&spec, max);
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);
  assert_int_equal(pool_count(pool), 1);
  assert_int_equal(get_info(pool, max).state, ILB_REPLICA_ACTIVE);
  const char *got = pick_id(pool);
  assert_int_equal(strlen(got), ILB_ID_MAX);
  assert_string_equal(got, max);
  assert_rc(ilb_replica_remove(pool, max), ILB_OK);

  free(max);
  free(over);
  free_pool(pool);
}

static void add_weight_limits(void **state) {
  (void)state;
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  ilb_replica_spec spec;

  spec_basic(&spec, "w");
  spec.weight = 0;
  assert_rc(ilb_replica_add(pool, &spec), ILB_EINVAL);
  spec.weight = ILB_WEIGHT_MAX + 1;
  assert_rc(ilb_replica_add(pool, &spec), ILB_ERANGE);
  spec.weight = (uint32_t)-1;
  assert_rc(ilb_replica_add(pool, &spec), ILB_ERANGE);
  spec.weight = 0x80000000u;
  assert_rc(ilb_replica_add(pool, &spec), ILB_ERANGE);
  assert_int_equal(pool_count(pool), 0);
  assert_int_equal(c.n_events, 0);

  spec.weight = ILB_WEIGHT_MAX;
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);
  assert_int_equal(weight_of(pool, "w"), ILB_WEIGHT_MAX);
  spec_basic(&spec, "one");
  spec.weight = 1;
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);
  assert_int_equal(weight_of(pool, "one"), 1);
  /* Extreme weights are usable by every policy. */
  for (int32_t p = ILB_POLICY_ROUND_ROBIN; p <= ILB_POLICY_CHWBL; p++) {
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_POLICY, p), ILB_OK);
    const char *got = pick_id(pool);
    assert_true(strcmp(got, "w") == 0 || strcmp(got, "one") == 0);
  }
  free_pool(pool);
}

static void add_duplicate_id(void **state) {
  (void)state;
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  int hd1 = 1, hd2 = 2;
  add_replica(pool, "dup", 3, 5, &hd1);
  assert_int_equal(c.n_events, 1);

  ilb_replica_spec spec;
  spec_basic(&spec, "dup");
  spec.weight = 9;
  spec.capacity = 1;
  spec.host_data = &hd2;
  assert_rc(ilb_replica_add(pool, &spec), ILB_EEXIST);

  /* A copy of the id in another buffer is the same id. */
  char copy[] = "dup";
  spec.id = copy;
  assert_rc(ilb_replica_add(pool, &spec), ILB_EEXIST);

  /* Nothing changed. */
  ilb_replica_info info = get_info(pool, "dup");
  assert_int_equal(info.weight, 3);
  assert_int_equal(info.capacity, 5);
  assert_ptr_equal(info.host_data, &hd1);
  assert_int_equal(pool_count(pool), 1);
  assert_int_equal(c.n_events, 1);
  free_pool(pool);
}

static void add_labels_errors(void **state) {
  (void)state;
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  ilb_replica_spec spec;

  /* NULL labels with n_labels > 0. */
  spec_basic(&spec, "l");
  spec.labels = NULL;
  spec.n_labels = 1;
  assert_rc(ilb_replica_add(pool, &spec), ILB_EINVAL);

  /* NULL key, NULL value. */
  ilb_label bad_key[] = {{"ok", "ok"}, {NULL, "v"}};
  spec.labels = bad_key;
  spec.n_labels = 2;
  assert_rc(ilb_replica_add(pool, &spec), ILB_EINVAL);
  ilb_label bad_val[] = {{"k", NULL}};
  spec.labels = bad_val;
  spec.n_labels = 1;
  assert_rc(ilb_replica_add(pool, &spec), ILB_EINVAL);

  /* Too many labels: 65 valid ones, and an absurd count. */
  ilb_label many[ILB_LABELS_MAX + 1];
  for (size_t i = 0; i < ILB_LABELS_MAX + 1; i++) {
    many[i].key = "k";
    many[i].value = "v";
  }
  spec.labels = many;
  spec.n_labels = ILB_LABELS_MAX + 1;
  assert_rc(ilb_replica_add(pool, &spec), ILB_ETOOBIG);
  spec.n_labels = SIZE_MAX;
  assert_rc(ilb_replica_add(pool, &spec), ILB_ETOOBIG);

  /* Label key or value longer than ILB_ID_MAX. */
  char *over = repeat_char('x', ILB_ID_MAX + 1);
  ilb_label long_key[] = {{over, "v"}};
  ilb_label long_val[] = {{"k", over}};
  spec.labels = long_key;
  spec.n_labels = 1;
  assert_rc(ilb_replica_add(pool, &spec), ILB_ETOOBIG);
  spec.labels = long_val;
  assert_rc(ilb_replica_add(pool, &spec), ILB_ETOOBIG);

  assert_int_equal(pool_count(pool), 0);
  assert_int_equal(c.n_events, 0);

  /* The limits themselves are accepted. */
  char *max = repeat_char('y', ILB_ID_MAX);
  many[0].key = max;
  many[0].value = max;
  spec.labels = many;
  spec.n_labels = ILB_LABELS_MAX;
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);
  assert_int_equal(get_info(pool, "l").n_labels, ILB_LABELS_MAX);

  /* n_labels 0 with NULL labels is fine. */
  spec_basic(&spec, "nolabels");
  spec.labels = NULL;
  spec.n_labels = 0;
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);
  assert_int_equal(get_info(pool, "nolabels").n_labels, 0);

  free(over);
  free(max);
  free_pool(pool);
}

static void add_zone_length_limit(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  char *over = repeat_char('z', ILB_ID_MAX + 1);
  char *max = repeat_char('z', ILB_ID_MAX);
  ilb_replica_spec spec;
  spec_basic(&spec, "a");
  spec.zone = over;
  assert_rc(ilb_replica_add(pool, &spec), ILB_ETOOBIG);
  assert_int_equal(pool_count(pool), 0);
  spec.zone = max;
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);
  spec_basic(&spec, "b");
  spec.zone = NULL;
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);
  spec_basic(&spec, "c");
  spec.zone = "";
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);
  assert_int_equal(pool_count(pool), 3);
  free(over);
  free(max);
  free_pool(pool);
}

static void add_spec_struct_size(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  ilb_replica_spec spec;
  spec_basic(&spec, "a");
  spec.struct_size = 0;
  assert_rc(ilb_replica_add(pool, &spec), ILB_ESIZE);
  spec.struct_size = SIZE_MAX;
  assert_rc(ilb_replica_add(pool, &spec), ILB_ESIZE);
  assert_int_equal(pool_count(pool), 0);

  struct {
    ilb_replica_spec spec;
    unsigned char tail[24];
  } big;
  memset(&big, 0, sizeof big);
  spec_basic(&big.spec, "big");
  big.spec.struct_size = sizeof big;
  big.tail[5] = 0xFF;
  assert_rc(ilb_replica_add(pool, &big.spec), ILB_ESIZE);
  assert_int_equal(pool_count(pool), 0);
  big.tail[5] = 0;
  assert_rc(ilb_replica_add(pool, &big.spec), ILB_OK);
  assert_int_equal(pool_count(pool), 1);
  assert_string_equal(pick_id(pool), "big");
  free_pool(pool);
}

static void add_copies_strings(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  int hd = 7;
  char *id = dup_str("replica-1");
  char *zone = dup_str("zone-a");
  char *k0 = dup_str("gpu"), *v0 = dup_str("h100");
  char *k1 = dup_str("model"), *v1 = dup_str("llama");
  ilb_label *labels = malloc(2 * sizeof *labels);
  assert_non_null(id);
  assert_non_null(labels);
  labels[0].key = k0;
  labels[0].value = v0;
  labels[1].key = k1;
  labels[1].value = v1;

  ilb_replica_spec spec;
  spec_basic(&spec, id);
  spec.zone = zone;
  spec.labels = labels;
  spec.n_labels = 2;
  spec.host_data = &hd;
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);

  /* Scribble over, then free, every caller buffer. */
  memset(id, 'X', strlen(id));
  memset(zone, 'X', strlen(zone));
  memset(k0, 'X', strlen(k0));
  memset(v0, 'X', strlen(v0));
  memset(k1, 'X', strlen(k1));
  memset(v1, 'X', strlen(v1));
  labels[0].key = labels[0].value = labels[1].key = labels[1].value = NULL;
  free(id);
  free(zone);
  free(k0);
  free(v0);
  free(k1);
  free(v1);
  free(labels);

  for (int i = 0; i < 10; i++) {
    ilb_pick_result res;
    assert_rc(ilb_pick_result_init(&res), ILB_OK);
    assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);
    assert_string_equal(res.replica_id, "replica-1");
    assert_ptr_equal(res.host_data, &hd);
    assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_OK);
  }
  ilb_replica_info info = get_info(pool, "replica-1");
  assert_int_equal(info.n_labels, 2);
  assert_rc(ilb_replica_set_weight(pool, "replica-1", 4), ILB_OK);
  assert_rc(ilb_replica_remove(pool, "replica-1"), ILB_OK);
  free_pool(pool);
}

/* ------------------------------------------------------------------------ */
/* remove / set_weight / get errors                                          */
/* ------------------------------------------------------------------------ */

static void remove_errors(void **state) {
  (void)state;
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  add_replica(pool, "a", 1, 0, NULL);
  size_t events = c.n_events;
  assert_rc(ilb_replica_remove(NULL, "a"), ILB_EINVAL);
  assert_rc(ilb_replica_remove(pool, NULL), ILB_EINVAL);
  assert_rc(ilb_replica_remove(pool, "b"), ILB_ENOENT);
  assert_rc(ilb_replica_remove(pool, "A"), ILB_ENOENT);
  assert_rc(ilb_replica_remove(pool, "aa"), ILB_ENOENT);
  assert_int_equal(pool_count(pool), 1);
  assert_int_equal(c.n_events, events);

  assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
  assert_rc(ilb_replica_remove(pool, "a"), ILB_ENOENT);
  assert_int_equal(pool_count(pool), 0);
  free_pool(pool);
}

static void set_weight_errors(void **state) {
  (void)state;
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  add_replica(pool, "a", 5, 0, NULL);
  size_t events = c.n_events;

  assert_rc(ilb_replica_set_weight(NULL, "a", 2), ILB_EINVAL);
  assert_rc(ilb_replica_set_weight(pool, NULL, 2), ILB_EINVAL);
  assert_rc(ilb_replica_set_weight(pool, "a", 0), ILB_EINVAL);
  assert_rc(ilb_replica_set_weight(pool, "a", ILB_WEIGHT_MAX + 1), ILB_ERANGE);
  assert_rc(ilb_replica_set_weight(pool, "a", (uint32_t)-1), ILB_ERANGE);
  assert_rc(ilb_replica_set_weight(pool, "nope", 2), ILB_ENOENT);
  assert_int_equal(weight_of(pool, "a"), 5);
  assert_int_equal(c.n_events, events);

  assert_rc(ilb_replica_set_weight(pool, "a", ILB_WEIGHT_MAX), ILB_OK);
  assert_int_equal(weight_of(pool, "a"), ILB_WEIGHT_MAX);
  assert_rc(ilb_replica_set_weight(pool, "a", 1), ILB_OK);
  assert_int_equal(weight_of(pool, "a"), 1);
  free_pool(pool);
}

static void get_errors(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  ilb_replica_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  assert_rc(ilb_replica_get(NULL, pool, "a"), ILB_EINVAL);
  assert_rc(ilb_replica_get(&info, NULL, "a"), ILB_EINVAL);
  assert_rc(ilb_replica_get(&info, pool, NULL), ILB_EINVAL);
  assert_rc(ilb_replica_get(&info, pool, "b"), ILB_ENOENT);
  info.struct_size = 0;
  assert_rc(ilb_replica_get(&info, pool, "a"), ILB_ESIZE);
  free_pool(pool);
}

/* ------------------------------------------------------------------------ */
/* Lifecycle and info                                                        */
/* ------------------------------------------------------------------------ */

static void remove_then_readd(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  int hd1 = 1, hd2 = 2;
  add_replica(pool, "a", 2, 0, &hd1);

  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);

  assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
  assert_rc(ilb_replica_get(&(ilb_replica_info){.struct_size =
                                                    sizeof(ilb_replica_info)},
                            pool, "a"),
            ILB_ENOENT);
  add_replica(pool, "a", 5, 3, &hd2);

  ilb_replica_info info = get_info(pool, "a");
  assert_int_equal(info.state, ILB_REPLICA_ACTIVE);
  assert_int_equal(info.weight, 5);
  assert_int_equal(info.capacity, 3);
  assert_ptr_equal(info.host_data, &hd2);
  assert_int_equal(info.in_flight, 0);
  assert_int_equal(info.completed, 0);

  /* The old ticket belongs to the removed replica, not to its namesake. */
  assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_EREMOVED);
  info = get_info(pool, "a");
  assert_int_equal(info.in_flight, 0);
  assert_int_equal(info.completed, 0);

  ilb_pick_result res2;
  assert_rc(ilb_pick_result_init(&res2), ILB_OK);
  assert_rc(ilb_pick(&res2, pool, NULL), ILB_OK);
  assert_string_equal(res2.replica_id, "a");
  assert_ptr_equal(res2.host_data, &hd2);
  assert_int_equal(get_info(pool, "a").in_flight, 1);
  assert_rc(ilb_complete(pool, res2.ticket, NULL), ILB_OK);
  assert_int_equal(get_info(pool, "a").in_flight, 0);
  assert_int_equal(get_info(pool, "a").completed, 1);
  free_pool(pool);
}

static void info_fields(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  int hd = 0;
  ilb_label labels[] = {{"gpu", "a100"}, {"region", "eu"}, {"tier", "1"}};
  ilb_replica_spec spec;
  spec_basic(&spec, "r");
  spec.weight = 7;
  spec.capacity = 3;
  spec.zone = "eu-west-1a";
  spec.labels = labels;
  spec.n_labels = 3;
  spec.host_data = &hd;
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);

  ilb_replica_info info = get_info(pool, "r");
  assert_ptr_equal(info.host_data, &hd);
  assert_int_equal(info.weight, 7);
  assert_int_equal(info.capacity, 3);
  assert_int_equal(info.state, ILB_REPLICA_ACTIVE);
  assert_int_equal(info.n_labels, 3);
  assert_int_equal(info.in_flight, 0);
  assert_int_equal(info.completed, 0);
  assert_int_equal(info.failed, 0);

  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);
  assert_int_equal(get_info(pool, "r").in_flight, 1);
  ilb_outcome out;
  assert_rc(ilb_outcome_init(&out), ILB_OK);
  out.status = ILB_OUTCOME_TIMEOUT;
  assert_rc(ilb_complete(pool, res.ticket, &out), ILB_OK);
  info = get_info(pool, "r");
  assert_int_equal(info.in_flight, 0);
  assert_int_equal(info.completed, 1);
  assert_int_equal(info.failed, 1);

  assert_rc(ilb_replica_set_weight(pool, "r", 11), ILB_OK);
  info = get_info(pool, "r");
  assert_int_equal(info.weight, 11);
  assert_int_equal(info.capacity, 3);
  assert_int_equal(info.completed, 1);
  free_pool(pool);
}

static void info_default_weight_and_capacity(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  ilb_replica_spec spec;
  spec_basic(&spec, "d"); /* spec_init defaults: weight 1, capacity 0 */
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);
  ilb_replica_info info = get_info(pool, "d");
  assert_int_equal(info.weight, 1);
  assert_int_equal(info.capacity, 0);
  assert_null(info.host_data);
  assert_int_equal(info.n_labels, 0);
  free_pool(pool);
}

static void info_smaller_struct_prefix_only(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  int hd = 0;
  ilb_label labels[] = {{"k", "v"}};
  ilb_replica_spec spec;
  spec_basic(&spec, "p");
  spec.weight = 4;
  spec.capacity = 9;
  spec.labels = labels;
  spec.n_labels = 1;
  spec.host_data = &hd;
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);

  struct {
    ilb_replica_info info;
    unsigned char guard[32];
  } buf;
  const size_t prefix = offsetof(ilb_replica_info, in_flight);
  memset(&buf, 0xA5, sizeof buf);
  buf.info.struct_size = prefix;
  assert_rc(ilb_replica_get(&buf.info, pool, "p"), ILB_OK);
  assert_ptr_equal(buf.info.host_data, &hd);
  assert_int_equal(buf.info.weight, 4);
  assert_int_equal(buf.info.capacity, 9);
  assert_int_equal(buf.info.state, ILB_REPLICA_ACTIVE);
  assert_int_equal(buf.info.n_labels, 1);

  const unsigned char *bytes = (const unsigned char *)&buf;
  for (size_t i = prefix; i < sizeof buf; i++) {
    if (bytes[i] != 0xA5)
      fail_msg("byte %zu (past struct_size %zu) was written: 0x%02x", i,
               prefix, bytes[i]);
  }
  free_pool(pool);
}

static void info_larger_struct_tail_untouched(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "q", 6, 2, NULL);
  struct {
    ilb_replica_info info;
    unsigned char guard[32];
  } buf;
  memset(&buf, 0xA5, sizeof buf);
  buf.info.struct_size = sizeof buf;
  assert_rc(ilb_replica_get(&buf.info, pool, "q"), ILB_OK);
  assert_int_equal(buf.info.weight, 6);
  assert_int_equal(buf.info.capacity, 2);
  assert_int_equal(buf.info.in_flight, 0);
  assert_int_equal(buf.info.completed, 0);
  assert_int_equal(buf.info.failed, 0);
  /* Filled up to min(caller size, library size): the unknown tail is
   * not the library's to write. */
  for (size_t i = 0; i < sizeof buf.guard; i++)
    assert_int_equal(buf.guard[i], 0xA5);
  free_pool(pool);
}

/* ------------------------------------------------------------------------ */
/* Events                                                                    */
/* ------------------------------------------------------------------------ */

static void events_added_weight_removed(void **state) {
  (void)state;
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  int hd = 0;

  c.now = 100;
  add_replica(pool, "ev", 3, 0, &hd);
  assert_int_equal(c.n_events, 1);
  struct ev_rec *e = &c.ev[0];
  assert_int_equal(e->struct_size, sizeof(ilb_event));
  assert_int_equal(e->type, ILB_EVENT_REPLICA_ADDED);
  assert_int_equal(e->old_state, 0);
  assert_int_equal(e->new_state, ILB_REPLICA_ACTIVE);
  assert_false(e->id_null);
  assert_string_equal(e->id, "ev");
  assert_ptr_equal(e->host_data, &hd);
  assert_int_equal(e->ts, 100);
  assert_ptr_equal(e->user_data, &c);

  c.now = 200;
  assert_rc(ilb_replica_set_weight(pool, "ev", 7), ILB_OK);
  assert_int_equal(c.n_events, 2);
  e = &c.ev[1];
  assert_int_equal(e->type, ILB_EVENT_REPLICA_WEIGHT);
  assert_string_equal(e->id, "ev");
  assert_ptr_equal(e->host_data, &hd);
  assert_int_equal(e->old_value, 3);
  assert_int_equal(e->new_value, 7);
  assert_int_equal(e->ts, 200);

  /* Same weight again: no change, no event. */
  c.now = 250;
  assert_rc(ilb_replica_set_weight(pool, "ev", 7), ILB_OK);
  assert_int_equal(c.n_events, 2);

  c.now = 260;
  assert_rc(ilb_replica_set_weight(pool, "ev", ILB_WEIGHT_MAX), ILB_OK);
  assert_int_equal(c.n_events, 3);
  e = &c.ev[2];
  assert_int_equal(e->type, ILB_EVENT_REPLICA_WEIGHT);
  assert_int_equal(e->old_value, 7);
  assert_int_equal(e->new_value, ILB_WEIGHT_MAX);
  assert_int_equal(e->ts, 260);

  c.now = 300;
  assert_rc(ilb_replica_remove(pool, "ev"), ILB_OK);
  assert_int_equal(c.n_events, 4);
  e = &c.ev[3];
  assert_int_equal(e->type, ILB_EVENT_REPLICA_REMOVED);
  assert_int_equal(e->old_state, ILB_REPLICA_ACTIVE);
  assert_int_equal(e->new_state, ILB_REPLICA_REMOVED);
  assert_string_equal(e->id, "ev");
  assert_ptr_equal(e->host_data, &hd);
  assert_int_equal(e->ts, 300);
  free_pool(pool);
}

static void events_not_fired_on_errors(void **state) {
  (void)state;
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  add_replica(pool, "a", 1, 0, NULL);
  assert_int_equal(c.n_events, 1);

  ilb_replica_spec spec;
  spec_basic(&spec, "a");
  assert_rc(ilb_replica_add(pool, &spec), ILB_EEXIST);
  assert_rc(ilb_replica_set_weight(pool, "a", 0), ILB_EINVAL);
  assert_rc(ilb_replica_set_weight(pool, "zz", 3), ILB_ENOENT);
  assert_rc(ilb_replica_remove(pool, "zz"), ILB_ENOENT);
  assert_rc(ilb_replica_set_weight(pool, "a", 1), ILB_OK); /* unchanged */
  assert_int_equal(c.n_events, 1);
  free_pool(pool);
}

static void events_one_per_replica_in_order(void **state) {
  (void)state;
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  char id[16];
  for (int i = 0; i < 10; i++) {
    c.now = 1000 + (uint64_t)i;
    snprintf(id, sizeof id, "r%d", i);
    add_replica(pool, id, 1, 0, NULL);
  }
  assert_int_equal(c.n_events, 10);
  for (int i = 0; i < 10; i++) {
    snprintf(id, sizeof id, "r%d", i);
    assert_int_equal(c.ev[i].type, ILB_EVENT_REPLICA_ADDED);
    assert_string_equal(c.ev[i].id, id);
    assert_int_equal(c.ev[i].ts, 1000 + (uint64_t)i);
  }
  free_pool(pool);
}

static void callback_writer_is_edeadlk(void **state) {
  (void)state;
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  int hd = 0;

  c.armed = 1;
  add_replica(pool, "a", 2, 0, &hd);
  assert_true(c.probed);

  assert_rc(c.rc_add, ILB_EDEADLK);
  assert_rc(c.rc_remove, ILB_EDEADLK);
  assert_rc(c.rc_set_weight, ILB_EDEADLK);
  assert_rc(c.rc_set_option, ILB_EDEADLK);
  assert_rc(c.rc_batch_begin, ILB_EDEADLK);
  /* Readers work inside the callback: the new replica is in the registry. */
  assert_rc(c.rc_get, ILB_OK);
  assert_int_equal(c.get_info.weight, 2);
  assert_ptr_equal(c.get_info.host_data, &hd);
  assert_int_equal(c.get_info.state, ILB_REPLICA_ACTIVE);

  /* The refused writes changed nothing. */
  assert_int_equal(pool_count(pool), 1);
  assert_int_equal(c.n_events, 1);
  assert_int_equal(weight_of(pool, "a"), 2);
  int64_t policy = 0;
  assert_rc(ilb_pool_get_option(&policy, pool, ILB_OPT_POLICY), ILB_OK);
  assert_int_equal(policy, ILB_POLICY_P2C);
  /* No batch was left open. */
  assert_rc(ilb_pool_batch_commit(pool), ILB_EINVAL);
  assert_string_equal(pick_id(pool), "a");

  /* Writers work again once the callback has returned. */
  add_replica(pool, "b", 1, 0, NULL);
  assert_int_equal(pool_count(pool), 2);
  free_pool(pool);
}

static void callback_can_pick_and_complete(void **state) {
  (void)state;
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  add_replica(pool, "a", 1, 0, NULL);

  /* Probe during the weight event of the published replica "a". */
  c.armed = 1;
  assert_rc(ilb_replica_set_weight(pool, "a", 3), ILB_OK);
  assert_true(c.probed);
  assert_rc(c.rc_pick, ILB_OK);
  assert_string_equal(c.picked_id, "a");
  assert_rc(c.rc_complete, ILB_OK);
  assert_rc(c.rc_get, ILB_OK);
  assert_rc(c.rc_add, ILB_EDEADLK);

  ilb_replica_info info = get_info(pool, "a");
  assert_int_equal(info.in_flight, 0);
  assert_int_equal(info.completed, 1);
  assert_int_equal(info.weight, 3);
  assert_int_equal(pool_count(pool), 1);
  free_pool(pool);
}

static void callback_other_pool_not_blocked(void **state) {
  (void)state;
  /* EDEADLK is about the same pool: a second pool is writable from a
   * callback of the first. */
  struct ctx c = {0};
  ilb_pool *pool = new_pool_ctx(&c);
  ilb_pool *other = new_pool();
  c.pool = other; /* the probe now targets the other pool */
  c.armed = 1;
  add_replica(pool, "a", 1, 0, NULL);
  assert_true(c.probed);
  assert_rc(c.rc_add, ILB_OK);
  assert_int_equal(pool_count(other), 1);
  assert_int_equal(pool_count(pool), 1);
  /* The probe opened a batch on the other pool; close it. */
  assert_rc(c.rc_batch_begin, ILB_OK);
  assert_rc(ilb_pool_batch_commit(other), ILB_OK);
  free_pool(other);
  free_pool(pool);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(spec_init_defaults),
      cmocka_unit_test(add_null_args),
      cmocka_unit_test(add_id_length_limit),
      cmocka_unit_test(add_weight_limits),
      cmocka_unit_test(add_duplicate_id),
      cmocka_unit_test(add_labels_errors),
      cmocka_unit_test(add_zone_length_limit),
      cmocka_unit_test(add_spec_struct_size),
      cmocka_unit_test(add_copies_strings),
      cmocka_unit_test(remove_errors),
      cmocka_unit_test(set_weight_errors),
      cmocka_unit_test(get_errors),
      cmocka_unit_test(remove_then_readd),
      cmocka_unit_test(info_fields),
      cmocka_unit_test(info_default_weight_and_capacity),
      cmocka_unit_test(info_smaller_struct_prefix_only),
      cmocka_unit_test(info_larger_struct_tail_untouched),
      cmocka_unit_test(events_added_weight_removed),
      cmocka_unit_test(events_not_fired_on_errors),
      cmocka_unit_test(events_one_per_replica_in_order),
      cmocka_unit_test(callback_writer_is_edeadlk),
      cmocka_unit_test(callback_can_pick_and_complete),
      cmocka_unit_test(callback_other_pool_not_blocked),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
