/*
 * Versions, error codes, policy names and option bounds: the parts of the API
 * that need no pool.
 *
 * SPDX-License-Identifier: MIT
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <inferlb/inferlb.h>

#include "testutil.h"

/* The header's table, expanded here independently of the library. */
struct err_row {
  int code;
  int value;
  const char *name;
  const char *text;
};

#define ERR_ROW(name, val, text) {ILB_##name, (val), #name, (text)},
static const struct err_row err_rows[] = {ILB_ERRNO_MAP(ERR_ROW)};
#undef ERR_ROW
#define N_ERR_ROWS (sizeof err_rows / sizeof err_rows[0])

/* ------------------------------------------------------------------------ */
/* Versions                                                                  */
/* ------------------------------------------------------------------------ */

static void version_num_matches_header(void **state) {
  (void)state;
  assert_int_equal(ilb_version(), ILB_VERSION_NUM);
  assert_int_equal(ILB_VERSION_NUM, ILB_VERSION_MAJOR * 10000 +
                                        ILB_VERSION_MINOR * 100 +
                                        ILB_VERSION_PATCH);
}

static void version_string_matches_numbers(void **state) {
  (void)state;
  const char *s = ilb_version_string();
  assert_non_null(s);

  char want[64];
  snprintf(want, sizeof want, "%d.%d.%d", ILB_VERSION_MAJOR,
           ILB_VERSION_MINOR, ILB_VERSION_PATCH);
  assert_string_equal(s, want);

  /* Also a well-formed MAJOR.MINOR.PATCH on its own terms, consistent with
   * the runtime number. */
  unsigned major = 0, minor = 0, patch = 0;
  int consumed = 0;
  assert_int_equal(sscanf(s, "%u.%u.%u%n", &major, &minor, &patch, &consumed),
                   3);
  assert_int_equal((size_t)consumed, strlen(s));
  assert_int_equal(major * 10000u + minor * 100u + patch, ilb_version());
  /* Static storage: the same pointer every time. */
  assert_ptr_equal(ilb_version_string(), s);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

static void err_table_names_and_texts(void **state) {
  (void)state;
  assert_true(N_ERR_ROWS > 0);
  for (size_t i = 0; i < N_ERR_ROWS; i++) {
    const struct err_row *r = &err_rows[i];
    assert_int_equal(r->code, r->value);
    assert_true(r->code < 0);

    const char *name = ilb_err_name(r->code);
    const char *text = ilb_strerror(r->code);
    assert_non_null(name);
    assert_non_null(text);
    assert_string_equal(name, r->name);
    /* The header's table is the one table the texts come from. */
    assert_string_equal(text, r->text);
    assert_true(text[0] != '\0');
    /* Not the fallbacks. */
    assert_string_not_equal(text, "unknown error");
    assert_string_not_equal(name, "EUNKNOWNCODE");
    assert_string_not_equal(text, "success");
  }
}

static void err_texts_and_names_distinct(void **state) {
  (void)state;
  for (size_t i = 0; i < N_ERR_ROWS; i++) {
    for (size_t j = i + 1; j < N_ERR_ROWS; j++) {
      assert_int_not_equal(err_rows[i].code, err_rows[j].code);
      assert_string_not_equal(ilb_strerror(err_rows[i].code),
                              ilb_strerror(err_rows[j].code));
      assert_string_not_equal(ilb_err_name(err_rows[i].code),
                              ilb_err_name(err_rows[j].code));
    }
  }
}

static void err_codes_contiguous_down_to_min(void **state) {
  (void)state;
  /* Codes are -1, -2, ... ILB_ERRNO_MIN, in table order, no gaps. */
  assert_int_equal(N_ERR_ROWS, (size_t)-ILB_ERRNO_MIN);
  for (size_t i = 0; i < N_ERR_ROWS; i++)
    assert_int_equal(err_rows[i].code, -(int)(i + 1));
  /* Every code from -1 to ILB_ERRNO_MIN has a real name. */
  for (int c = -1; c >= ILB_ERRNO_MIN; c--) {
    assert_string_not_equal(ilb_err_name(c), "EUNKNOWNCODE");
    assert_string_not_equal(ilb_strerror(c), "unknown error");
  }
}

static void err_zero_is_success(void **state) {
  (void)state;
  assert_int_equal(ILB_OK, 0);
  assert_non_null(ilb_strerror(0));
  assert_non_null(ilb_err_name(0));
  assert_string_equal(ilb_strerror(0), "success");
  assert_string_equal(ilb_err_name(0), "OK");
  assert_string_equal(ilb_strerror(ILB_OK), "success");
}

static void err_unknown_codes_fallback(void **state) {
  (void)state;
  const int unknown[] = {1,       2,           -9999,   INT_MIN, INT_MAX,
                         INT_MIN + 1, ILB_ERRNO_MIN - 1, 100, -100};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    const char *text = ilb_strerror(unknown[i]);
    const char *name = ilb_err_name(unknown[i]);
    assert_non_null(text);
    assert_non_null(name);
    assert_string_equal(text, "unknown error");
    assert_string_equal(name, "EUNKNOWNCODE");
  }
}

/* ------------------------------------------------------------------------ */
/* Policy names                                                              */
/* ------------------------------------------------------------------------ */

static const struct {
  int32_t id;
  const char *name;
} policy_names[] = {
    {ILB_POLICY_ROUND_ROBIN, "round_robin"},
    {ILB_POLICY_WEIGHTED_ROUND_ROBIN, "weighted_round_robin"},
    {ILB_POLICY_RANDOM, "random"},
    {ILB_POLICY_WEIGHTED_RANDOM, "weighted_random"},
    {ILB_POLICY_LEAST_CONN, "least_conn"},
    {ILB_POLICY_WEIGHTED_LEAST_REQUEST, "weighted_least_request"},
    {ILB_POLICY_P2C, "p2c"},
    {ILB_POLICY_RING, "ring"},
    {ILB_POLICY_MAGLEV, "maglev"},
    {ILB_POLICY_RENDEZVOUS, "rendezvous"},
    {ILB_POLICY_CHWBL, "chwbl"},
    {ILB_POLICY_COMPOSITE, "composite"},
    {ILB_POLICY_PEAK_EWMA, "peak_ewma"},
    {ILB_POLICY_LEAST_TOKENS, "least_tokens"},
    {ILB_POLICY_PREFIX, "prefix"},
};

static void policy_name_round_trip(void **state) {
  (void)state;
  /* The shared list in testutil.h has them all, in id order. */
  assert_int_equal(N_POLICIES, sizeof policy_names / sizeof policy_names[0]);
  for (size_t i = 0; i < N_POLICIES; i++)
    assert_int_equal(all_policies[i], policy_names[i].id);
  for (size_t i = 0; i < sizeof policy_names / sizeof policy_names[0]; i++) {
    const char *name = ilb_policy_name(policy_names[i].id);
    assert_non_null(name);
    assert_string_equal(name, policy_names[i].name);

    int32_t id = -12345;
    assert_rc(ilb_policy_from_name(&id, policy_names[i].name), ILB_OK);
    assert_int_equal(id, policy_names[i].id);

    /* And back through a copy of the returned name (not pointer identity). */
    char buf[64];
    snprintf(buf, sizeof buf, "%s", name);
    id = -12345;
    assert_rc(ilb_policy_from_name(&id, buf), ILB_OK);
    assert_int_equal(id, policy_names[i].id);
  }
}

static void policy_name_unknown_id_is_null(void **state) {
  (void)state;
  const int32_t bad[] = {0, 16, -1, 100, INT32_MAX, INT32_MIN};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_null(ilb_policy_name(bad[i]));
}

static void policy_from_name_unknown(void **state) {
  (void)state;
  const char *bad[] = {"",          "P2C",          "p2c ",
                       " p2c",      "round",        "round_robin_",
                       "least",     "weighted",     "RANDOM",
                       "p2c\n",     "least-conn",   "unknown_policy"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int32_t id = 0;
    assert_rc(ilb_policy_from_name(&id, bad[i]), ILB_EUNKNOWN);
  }
}

static void policy_from_name_null(void **state) {
  (void)state;
  int32_t id = 0;
  assert_rc(ilb_policy_from_name(&id, NULL), ILB_EINVAL);
  assert_rc(ilb_policy_from_name(NULL, "p2c"), ILB_EINVAL);
  assert_rc(ilb_policy_from_name(NULL, NULL), ILB_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Option bounds                                                             */
/* ------------------------------------------------------------------------ */

static void option_bounds_values(void **state) {
  (void)state;
  const struct {
    int32_t opt;
    int64_t min, max, def;
  } want[] = {
      {ILB_OPT_POLICY, ILB_POLICY_ROUND_ROBIN, ILB_POLICY_PREFIX,
       ILB_POLICY_P2C},
      {ILB_OPT_P2C_CHOICES, 2, 16, 2},
      {ILB_OPT_MAX_IN_FLIGHT, 64, 16777216, 65536},
      {ILB_OPT_ALLOW_OVER_CAPACITY, 0, 1, 0},
      {ILB_OPT_HASH_NO_KEY, 0, 1, 0},
      {ILB_OPT_RING_VNODES, 1, 1000, 160},
      {ILB_OPT_MAGLEV_TABLE_SIZE, 0, 16777213, 65537},
      {ILB_OPT_HASH_BALANCE_FACTOR, 100, 10000, 125},
      /* 108..123 (telemetry): test_telemetry.c */
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    int64_t mn = -777, mx = -777, def = -777;
    assert_rc(ilb_option_bounds(&mn, &mx, &def, want[i].opt), ILB_OK);
    assert_int_equal(mn, want[i].min);
    assert_int_equal(mx, want[i].max);
    assert_int_equal(def, want[i].def);
    assert_true(mn <= def && def <= mx);
  }
}

static void option_bounds_null_outs(void **state) {
  (void)state;
  const int32_t opts[] = {ILB_OPT_POLICY, ILB_OPT_P2C_CHOICES,
                          ILB_OPT_MAX_IN_FLIGHT, ILB_OPT_ALLOW_OVER_CAPACITY};
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
    int64_t mn = 0, mx = 0, def = 0;
    assert_rc(ilb_option_bounds(&mn, &mx, &def, opts[i]), ILB_OK);

    int64_t v = -777;
    assert_rc(ilb_option_bounds(NULL, NULL, NULL, opts[i]), ILB_OK);
    assert_rc(ilb_option_bounds(&v, NULL, NULL, opts[i]), ILB_OK);
    assert_int_equal(v, mn);
    v = -777;
    assert_rc(ilb_option_bounds(NULL, &v, NULL, opts[i]), ILB_OK);
    assert_int_equal(v, mx);
    v = -777;
    assert_rc(ilb_option_bounds(NULL, NULL, &v, opts[i]), ILB_OK);
    assert_int_equal(v, def);
  }
}

static void option_bounds_unknown(void **state) {
  (void)state;
  const int32_t bad[] = {0, 1, 99, 183, 199, 205, -1, -100, INT32_MAX, INT32_MIN};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t mn = 0, mx = 0, def = 0;
    assert_rc(ilb_option_bounds(&mn, &mx, &def, bad[i]), ILB_EUNKNOWN);
    assert_rc(ilb_option_bounds(NULL, NULL, NULL, bad[i]), ILB_EUNKNOWN);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(version_num_matches_header),
      cmocka_unit_test(version_string_matches_numbers),
      cmocka_unit_test(err_table_names_and_texts),
      cmocka_unit_test(err_texts_and_names_distinct),
      cmocka_unit_test(err_codes_contiguous_down_to_min),
      cmocka_unit_test(err_zero_is_success),
      cmocka_unit_test(err_unknown_codes_fallback),
      cmocka_unit_test(policy_name_round_trip),
      cmocka_unit_test(policy_name_unknown_id_is_null),
      cmocka_unit_test(policy_from_name_unknown),
      cmocka_unit_test(policy_from_name_null),
      cmocka_unit_test(option_bounds_values),
      cmocka_unit_test(option_bounds_null_outs),
      cmocka_unit_test(option_bounds_unknown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
