/*
 * The simulator's trace reader and reuse ceilings (bench/sim/trace.c):
 *   1. good lines: key order, unknown keys of every JSON type, whitespace,
 *      escaped keys, empty hash_ids, a trailing "\r", the largest values,
 *      timestamps in ms (fractions, exponents, rounding, the 64-bit limit);
 *   2. blank lines, and every kind of malformed line with its exact error
 *      text; a failed line appends nothing;
 *   3. sim_trace_load: the line number of the first malformed line, blank
 *      and CRLF lines, no final newline, a line longer than the read
 *      buffer, I/O errors, a stable sort of out-of-order arrivals;
 *   4. the bundled Mooncake trace (bench/data/mooncake): its figures, as
 *      quoted in bench/data/README.md, are printed and checked here;
 *   5. reuse ceilings on hand-computed traces (infinite and LRU), and
 *      10^6 distinct blocks through the LRU.
 * Temporary files live in a mkdtemp directory removed by the teardown.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trace.h"

#ifndef SIM_TRACE_FILE
#error "SIM_TRACE_FILE (the bundled Mooncake trace) must be defined"
#endif

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

#define TMPDIR_PREFIX "test_sim_trace"
#include "tmpdir.h"

/* Writes len bytes to a new file of the temp directory; its path. */
static const char *write_file(const char *name, const char *data,
                              size_t len) {
  const char *path = tmp_path(name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
  return path;
}

static const char *write_str(const char *name, const char *data) {
  return write_file(name, data, strlen(data));
}

/* Parses a line that must be good; the request it appended. */
static sim_req parse_good(sim_trace *t, const char *line) {
  char err[256] = "";
  size_t n = t->n;
  int rc = sim_trace_parse_line(t, line, strlen(line), err, sizeof err);
  if (rc != 0)
    fail_msg("rc %d on [%s]: %s", rc, line, err);
  assert_int_equal(t->n, n + 1);
  return t->req[t->n - 1];
}

/* The blocks of request i. */
static const uint64_t *blocks_of(const sim_trace *t, size_t i) {
  return t->blocks + t->req[i].blocks_off;
}

/* A trace built by hand: requests given as arrays of block ids. */
static void add_req(sim_trace *t, const uint64_t *ids, uint32_t n) {
  if (t->n == t->cap) {
    t->cap = t->cap ? 2 * t->cap : 16;
    t->req = realloc(t->req, t->cap * sizeof *t->req);
    assert_non_null(t->req);
  }
  while (t->n_blocks + n > t->cap_blocks) {
    t->cap_blocks = t->cap_blocks ? 2 * t->cap_blocks : 64;
    t->blocks = realloc(t->blocks, t->cap_blocks * sizeof *t->blocks);
    assert_non_null(t->blocks);
  }
  sim_req r;
  memset(&r, 0, sizeof r);
  r.arrival_ns = t->n;
  r.n_blocks = n;
  r.input_tokens = n * SIM_BLOCK_TOKENS;
  r.blocks_off = t->n_blocks;
  if (n > 0)
    memcpy(t->blocks + t->n_blocks, ids, n * sizeof *ids);
  t->n_blocks += n;
  t->req[t->n++] = r;
}

#define ADD(t, ...)                                                          \
  do {                                                                       \
    static const uint64_t ids_[] = {__VA_ARGS__};                            \
    add_req((t), ids_, (uint32_t)(sizeof ids_ / sizeof ids_[0]));            \
  } while (0)

static void assert_share(double got, uint64_t hits, uint64_t total) {
  double want = (double)hits / (double)total;
  if (got != want)
    fail_msg("reuse %.9f, expected %llu/%llu = %.9f", got,
             (unsigned long long)hits, (unsigned long long)total, want);
}

/* ------------------------------------------------------------------------ */
/* 1. Good lines                                                             */
/* ------------------------------------------------------------------------ */

static void test_good_lines(void **state) {
  (void)state;
  sim_trace t = {0};

  /* The file's own form. */
  sim_req r = parse_good(&t, "{\"timestamp\": 40, \"input_length\": 23769, "
                             "\"output_length\": 3, \"hash_ids\": [151, 152, "
                             "153]}");
  assert_int_equal(r.arrival_ns, UINT64_C(40000000));
  assert_int_equal(r.input_tokens, 23769);
  assert_int_equal(r.output_tokens, 3);
  assert_int_equal(r.n_blocks, 3);
  assert_int_equal(r.session, 0);
  assert_int_equal(r.blocks_off, 0);
  assert_int_equal(blocks_of(&t, 0)[0], 151);
  assert_int_equal(blocks_of(&t, 0)[2], 153);

  /* Keys in reverse order; the blocks follow the earlier ones. */
  r = parse_good(&t, "{\"hash_ids\":[7,8],\"output_length\":2,"
                     "\"input_length\":1000,\"timestamp\":5}");
  assert_int_equal(r.arrival_ns, UINT64_C(5000000));
  assert_int_equal(r.input_tokens, 1000);
  assert_int_equal(r.output_tokens, 2);
  assert_int_equal(r.n_blocks, 2);
  assert_int_equal(r.blocks_off, 3);
  assert_int_equal(blocks_of(&t, 1)[0], 7);
  assert_int_equal(blocks_of(&t, 1)[1], 8);

  /* Unknown keys of every JSON type, before, between and after; empty
   * hash_ids. */
  r = parse_good(
      &t, "{\"s\": \"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00 "
          "\xc3\xbc }{][,:\", \"n1\": -1.5e-3, \"n2\": 0, \"n3\": 12.25E+2, "
          "\"t\": true, \"timestamp\": 0, \"f\": false, \"z\": null, "
          "\"input_length\": 0, \"a\": [1, [2, {\"x\": [ ]}], \"y\", [], {}],"
          " \"o\": {\"k\": {\"k\": {\"hash_ids\": 1}}, \"l\": [null]}, "
          "\"output_length\": 0, \"hash_ids\": [], "
          "\"a key longer than sixteen bytes\": {}, \"\": \"\"}");
  assert_int_equal(r.arrival_ns, 0);
  assert_int_equal(r.input_tokens, 0);
  assert_int_equal(r.output_tokens, 0);
  assert_int_equal(r.n_blocks, 0);
  assert_int_equal(t.n_blocks, 5);

  /* Whitespace wherever JSON allows it, and a trailing "\r". */
  r = parse_good(&t, " \t{ \"timestamp\" :\t1 ,\"input_length\"\n:2,  "
                     "\"output_length\":3 , \"hash_ids\" : [ 1 ,2\t, 3 ] "
                     "} \t\r");
  assert_int_equal(r.arrival_ns, UINT64_C(1000000));
  assert_int_equal(r.input_tokens, 2);
  assert_int_equal(r.output_tokens, 3);
  assert_int_equal(r.n_blocks, 3);
  r = parse_good(&t, "{\"timestamp\":1,\"input_length\":2,"
                     "\"output_length\":3,\"hash_ids\":[]}\r");
  assert_int_equal(r.n_blocks, 0);

  /* Escaped keys are the same keys. */
  r = parse_good(&t, "{\"time\\u0073tamp\": 9, \"input\\u005flength\": 1, "
                     "\"output_length\": 1, \"hash\\u005Fids\": [4]}");
  assert_int_equal(r.arrival_ns, UINT64_C(9000000));
  assert_int_equal(blocks_of(&t, t.n - 1)[0], 4);

  /* The largest values. */
  r = parse_good(&t, "{\"timestamp\": 18446744073709.551615, "
                     "\"input_length\": 4294967295, \"output_length\": "
                     "4294967295, \"hash_ids\": [18446744073709551615, 0]}");
  assert_int_equal(r.arrival_ns, UINT64_MAX);
  assert_int_equal(r.input_tokens, UINT32_MAX);
  assert_int_equal(r.output_tokens, UINT32_MAX);
  assert_int_equal(blocks_of(&t, t.n - 1)[0], UINT64_MAX);
  assert_int_equal(blocks_of(&t, t.n - 1)[1], 0);

  /* A line given with its length: what follows is not read. */
  const char *l = "{\"timestamp\":1,\"input_length\":2,\"output_length\":3,"
                  "\"hash_ids\":[5]}garbage";
  char err[128];
  assert_int_equal(sim_trace_parse_line(&t, l, strlen(l) - 7, err,
                                        sizeof err), 0);
  sim_trace_free(&t);
  assert_null(t.req);
  assert_null(t.blocks);
  assert_int_equal(t.n, 0);
  sim_trace_free(NULL);
}

/* Timestamps: ms to ns exactly, rounded to the nearest ns (halves up). */
static void test_timestamps(void **state) {
  (void)state;
  static const struct {
    const char *ms;
    uint64_t ns;
  } cases[] = {
      {"0", 0},
      {"0.0", 0},
      {"40", UINT64_C(40000000)},
      {"1022025", UINT64_C(1022025000000)},
      {"1.5", UINT64_C(1500000)},
      {"0.000001", 1},
      {"0.0000005", 1},
      {"0.00000049999", 0},
      {"0.0000015", 2},
      {"123.4567894", UINT64_C(123456789)},
      {"123.4567895", UINT64_C(123456790)},
      {"1e3", UINT64_C(1000000000)},
      {"1E+3", UINT64_C(1000000000)},
      {"1e-6", 1},
      {"2.5e-7", 0},
      {"5e-7", 1},
      {"0.001e3", UINT64_C(1000000)},
      {"12345678e-2", UINT64_C(123456780000)},
      {"0e999999999999999", 0},
      {"1e-999999999999999", 0},
      {"18446744073709.551615", UINT64_MAX},
      {"18446744073709.5516154", UINT64_MAX},
      {"18446744073709551615e-6", UINT64_MAX},
      {"1844674407370955161500000000000000000000e-26", UINT64_MAX},
      {"1844674407370955161500000000000000000000e-30", UINT64_C(1844674407370955)},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sim_trace t = {0};
    char line[256];
    snprintf(line, sizeof line,
             "{\"timestamp\": %s, \"input_length\": 1, \"output_length\": "
             "1, \"hash_ids\": [1]}",
             cases[i].ms);
    sim_req r = parse_good(&t, line);
    if (r.arrival_ns != cases[i].ns)
      fail_msg("timestamp %s: %llu ns, expected %llu", cases[i].ms,
               (unsigned long long)r.arrival_ns,
               (unsigned long long)cases[i].ns);
    sim_trace_free(&t);
  }
}

/* ------------------------------------------------------------------------ */
/* 2. Blank and malformed lines                                              */
/* ------------------------------------------------------------------------ */

static void test_blank_lines(void **state) {
  (void)state;
  sim_trace t = {0};
  char err[64];
  static const char *const blanks[] = {"", " ", "   ", "\t", "\r", " \t \r",
                                       "\n"};
  for (size_t i = 0; i < sizeof blanks / sizeof blanks[0]; i++)
    assert_int_equal(sim_trace_parse_line(&t, blanks[i], strlen(blanks[i]),
                                          err, sizeof err), 1);
  assert_int_equal(sim_trace_parse_line(&t, NULL, 0, err, sizeof err), 1);
  assert_int_equal(t.n, 0);
  assert_int_equal(t.n_blocks, 0);
  sim_trace_free(&t);
}

#define REST "\"input_length\": 1, \"output_length\": 2, \"hash_ids\": [3]}"
#define GOOD_HEAD "{\"timestamp\": 0, \"input_length\": 1, " \
                  "\"output_length\": 2, "

static void test_malformed_lines(void **state) {
  (void)state;
  static const struct {
    const char *line, *err;
  } cases[] = {
      /* Not an object, or not one alone. */
      {"x", "expected '{' at column 1"},
      {"  []", "expected '{' at column 3"},
      {"\"timestamp\": 0", "expected '{' at column 1"},
      {"{\"timestamp\": 0, " REST " x",
       "trailing characters after the object"},
      {"{\"timestamp\": 0, " REST "{}",
       "trailing characters after the object"},
      {"{\"timestamp\": 0, " REST ",", "trailing characters after the object"},
      {"{\"timestamp\": 0, " REST "\r\r x",
       "trailing characters after the object"},
      /* Object syntax. */
      {"{", "expected a key string at column 2"},
      {"{timestamp: 0}", "expected a key string at column 2"},
      {"{\"timestamp\": 0,}", "expected a key string at column 17"},
      {"{\"timestamp\" 0}", "expected ':' after the key at column 14"},
      {"{\"timestamp\": 0 \"input_length\": 1}",
       "expected ',' or '}' at column 17"},
      {"{\"timestamp\": 0", "expected ',' or '}' at column 16"},
      {"{\"timestamp\": 0; " REST, "expected ',' or '}' at column 16"},
      {"{\"timestamp", "unterminated string at column 2"},
      {"{\"time\tstamp\": 0}", "control character in string at column 7"},
      /* Required keys. */
      {"{}", "missing key timestamp"},
      {"{" REST, "missing key timestamp"},
      {"{\"Timestamp\": 0, " REST, "missing key timestamp"},
      {"{\"timestamp\\u0000\": 0, " REST, "missing key timestamp"},
      {"{\"timestamp\": 0, \"output_length\": 2, \"hash_ids\": []}",
       "missing key input_length"},
      {"{\"timestamp\": 0, \"input_length\": 1, \"hash_ids\": []}",
       "missing key output_length"},
      {"{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 2}",
       "missing key hash_ids"},
      {"{\"timestamp\": 0, \"timestamp\": 0, " REST,
       "duplicate key timestamp"},
      {GOOD_HEAD "\"hash_ids\": [], \"hash\\u005fids\": []}",
       "duplicate key hash_ids"},
      /* timestamp. */
      {"{\"timestamp\": -1, " REST, "timestamp is not a non-negative number"},
      {"{\"timestamp\": -0, " REST, "timestamp is not a non-negative number"},
      {"{\"timestamp\": \"0\", " REST,
       "timestamp is not a non-negative number"},
      {"{\"timestamp\": null, " REST,
       "timestamp is not a non-negative number"},
      {"{\"timestamp\": 01, " REST, "timestamp is not a non-negative number"},
      {"{\"timestamp\": 1., " REST, "timestamp is not a non-negative number"},
      {"{\"timestamp\": .5, " REST, "timestamp is not a non-negative number"},
      {"{\"timestamp\": 1e, " REST, "timestamp is not a non-negative number"},
      {"{\"timestamp\": +1, " REST, "timestamp is not a non-negative number"},
      {"{\"timestamp\": 1-2, " REST,
       "timestamp is not a non-negative number"},
      {"{\"timestamp\": , " REST, "timestamp is not a non-negative number"},
      {"{\"timestamp\": 18446744073709.551616, " REST,
       "timestamp is out of range (max 18446744073709551615 ns)"},
      {"{\"timestamp\": 18446744073709.5516155, " REST,
       "timestamp is out of range (max 18446744073709551615 ns)"},
      {"{\"timestamp\": 1e400, " REST,
       "timestamp is out of range (max 18446744073709551615 ns)"},
      {"{\"timestamp\": 1e99999999999999999999, " REST,
       "timestamp is out of range (max 18446744073709551615 ns)"},
      /* Lengths. */
      {"{\"timestamp\": 0, \"input_length\": 1.5, \"output_length\": 2, "
       "\"hash_ids\": []}",
       "input_length is not a non-negative integer"},
      {"{\"timestamp\": 0, \"input_length\": -3, \"output_length\": 2, "
       "\"hash_ids\": []}",
       "input_length is not a non-negative integer"},
      {"{\"timestamp\": 0, \"input_length\": 1e3, \"output_length\": 2, "
       "\"hash_ids\": []}",
       "input_length is not a non-negative integer"},
      {"{\"timestamp\": 0, \"input_length\": 007, \"output_length\": 2, "
       "\"hash_ids\": []}",
       "input_length is not a non-negative integer"},
      {"{\"timestamp\": 0, \"input_length\": [1], \"output_length\": 2, "
       "\"hash_ids\": []}",
       "input_length is not a non-negative integer"},
      {"{\"timestamp\": 0, \"input_length\": 4294967296, "
       "\"output_length\": 2, \"hash_ids\": []}",
       "input_length is out of range (max 4294967295)"},
      {"{\"timestamp\": 0, \"input_length\": 1, \"output_length\": null, "
       "\"hash_ids\": []}",
       "output_length is not a non-negative integer"},
      {"{\"timestamp\": 0, \"input_length\": 1, \"output_length\": true, "
       "\"hash_ids\": []}",
       "output_length is not a non-negative integer"},
      {"{\"timestamp\": 0, \"input_length\": 1, \"output_length\": "
       "99999999999999999999999, \"hash_ids\": []}",
       "output_length is out of range (max 4294967295)"},
      /* hash_ids. */
      {GOOD_HEAD "\"hash_ids\": 3}", "hash_ids is not an array"},
      {GOOD_HEAD "\"hash_ids\": {}}", "hash_ids is not an array"},
      {GOOD_HEAD "\"hash_ids\": \"[1]\"}", "hash_ids is not an array"},
      {GOOD_HEAD "\"hash_ids\": [1, -2]}",
       "hash_ids[1] is not a non-negative integer"},
      {GOOD_HEAD "\"hash_ids\": [1, 2, \"3\"]}",
       "hash_ids[2] is not a non-negative integer"},
      {GOOD_HEAD "\"hash_ids\": [1.0]}",
       "hash_ids[0] is not a non-negative integer"},
      {GOOD_HEAD "\"hash_ids\": [[1]]}",
       "hash_ids[0] is not a non-negative integer"},
      {GOOD_HEAD "\"hash_ids\": [,1]}",
       "hash_ids[0] is not a non-negative integer"},
      {GOOD_HEAD "\"hash_ids\": [18446744073709551616]}",
       "hash_ids[0] is out of range (max 18446744073709551615)"},
      {GOOD_HEAD "\"hash_ids\": [1, 2,]}",
       "trailing comma in hash_ids at column 75"},
      {GOOD_HEAD "\"hash_ids\": [1 2]}",
       "expected ',' or ']' in hash_ids at column 72"},
      {GOOD_HEAD "\"hash_ids\": [1, 2",
       "expected ',' or ']' in hash_ids at column 74"},
      /* Bad values under unknown keys. */
      {"{\"x\": tru, " REST, "invalid value at column 7"},
      {"{\"x\": nul}", "invalid value at column 7"},
      {"{\"x\": True}", "invalid value at column 7"},
      {"{\"x\": 'a'}", "invalid value at column 7"},
      {"{\"x\": }", "invalid value at column 7"},
      {"{\"x\": ", "expected a value at column 7"},
      {"{\"x\": -}", "invalid number at column 7"},
      {"{\"x\": 1.e5}", "invalid number at column 7"},
      {"{\"x\": 0x10}", "expected ',' or '}' at column 8"},
      {"{\"x\": \"abc}", "unterminated string at column 7"},
      {"{\"x\": \"a\\qb\"}", "invalid escape in string at column 9"},
      {"{\"x\": \"a\\u12G4\"}", "invalid \\u escape in string at column 9"},
      {"{\"x\": \"a\\u12\"}", "invalid \\u escape in string at column 9"},
      {"{\"x\": \"a\x01\"}", "control character in string at column 9"},
      {"{\"x\": [1,]}", "invalid value at column 10"},
      {"{\"x\": [1 2]}", "expected ',' or ']' at column 10"},
      {"{\"x\": [1, 2}", "expected ',' or ']' at column 12"},
      {"{\"x\": {\"a\" 1}}", "expected ':' at column 12"},
      {"{\"x\": {1: 2}}", "expected a key string at column 8"},
      {"{\"x\": {\"a\": 1,}}", "expected a key string at column 15"},
      {"{\"x\": {\"a\": 1]}", "expected ',' or '}' at column 14"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sim_trace t = {0};
    char err[256];
    /* A good line first: a bad one must leave it (and its blocks) alone. */
    parse_good(&t, "{\"timestamp\": 1, \"input_length\": 1, "
                   "\"output_length\": 1, \"hash_ids\": [10, 11]}");
    memset(err, 'X', sizeof err);
    int rc = sim_trace_parse_line(&t, cases[i].line, strlen(cases[i].line),
                                  err, sizeof err);
    if (rc != -1)
      fail_msg("[%s]: rc %d, expected -1", cases[i].line, rc);
    if (strcmp(err, cases[i].err) != 0)
      fail_msg("[%s]:\n  got  \"%s\"\n  want \"%s\"", cases[i].line, err,
               cases[i].err);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.n_blocks, 2);
    sim_trace_free(&t);
  }
}

static void test_malformed_more(void **state) {
  (void)state;
  sim_trace t = {0};
  char err[256];

  /* A failed hash_ids array, half appended, is rolled back. */
  const char *l = GOOD_HEAD "\"hash_ids\": [1, 2, 3, -4]}";
  assert_int_equal(sim_trace_parse_line(&t, l, strlen(l), err, sizeof err),
                   -1);
  assert_string_equal(err, "hash_ids[3] is not a non-negative integer");
  assert_int_equal(t.n, 0);
  assert_int_equal(t.n_blocks, 0);

  /* Nesting: 128 levels inside an ignored value are fine, 129 are not. */
  char deep[600];
  for (int depth = 128; depth <= 129; depth++) {
    size_t n = 0;
    n += (size_t)snprintf(deep + n, sizeof deep - n, "{\"x\": ");
    for (int i = 0; i < depth; i++)
      deep[n++] = '[';
    for (int i = 0; i < depth; i++)
      deep[n++] = ']';
    n += (size_t)snprintf(deep + n, sizeof deep - n, ", \"timestamp\": 0, %s",
                          REST);
    int rc = sim_trace_parse_line(&t, deep, n, err, sizeof err);
    if (depth == 128) {
      assert_int_equal(rc, 0);
    } else {
      assert_int_equal(rc, -1);
      assert_string_equal(err, "value nested too deeply at column 135");
    }
  }
  assert_int_equal(t.n, 1);

  /* A NUL byte inside a line is no JSON whitespace. */
  static const char nul[] = "{\"timestamp\": 0,\0 " REST;
  assert_int_equal(sim_trace_parse_line(&t, nul, sizeof nul - 1, err,
                                        sizeof err), -1);
  assert_string_equal(err, "expected a key string at column 17");

  /* No error buffer, or a short one: still -1, truncated, terminated. */
  assert_int_equal(sim_trace_parse_line(&t, "x", 1, NULL, 0), -1);
  assert_int_equal(sim_trace_parse_line(&t, "x", 1, err, 0), -1);
  char small[8];
  assert_int_equal(sim_trace_parse_line(&t, "{}", 2, small, sizeof small),
                   -1);
  assert_string_equal(small, "missing");
  assert_int_equal(t.n, 1);
  sim_trace_free(&t);
}

/* ------------------------------------------------------------------------ */
/* 3. Loading files                                                          */
/* ------------------------------------------------------------------------ */

#define LINE(ts, out, ids)                                                   \
  "{\"timestamp\": " #ts ", \"input_length\": 512, \"output_length\": " #out \
  ", \"hash_ids\": [" ids "]}"

static void expect_load_error(const char *name, const char *data,
                              const char *what) {
  const char *path = write_str(name, data);
  sim_trace t;
  char err[512], want[512];
  memset(&t, 0x5A, sizeof t);
  assert_int_equal(sim_trace_load(&t, path, err, sizeof err), -1);
  snprintf(want, sizeof want, "%s:%s", path, what);
  assert_string_equal(err, want);
  assert_null(t.req);
  assert_null(t.blocks);
  assert_int_equal(t.n, 0);
  assert_int_equal(t.n_blocks, 0);
  sim_trace_free(&t);
}

static void test_load_errors(void **state) {
  (void)state;
  /* The first malformed line, counted from 1, blank lines included. */
  expect_load_error("bad5.jsonl",
                    LINE(0, 1, "1") "\n"
                    "\n"
                    "\r\n"
                    LINE(1, 1, "1, 2") "\r\n"
                    "{\"timestamp\": 2, \"input_length\": 1, "
                    "\"output_length\": 1}\n"
                    "also bad\n",
                    "5: missing key hash_ids");
  expect_load_error("bad1.jsonl", "{\"timestamp\": -1}\n",
                    "1: timestamp is not a non-negative number");
  /* The last line, without its newline. */
  expect_load_error("badlast.jsonl",
                    LINE(0, 1, "1") "\n" LINE(1, 1, "1") "\n" LINE(2, 1, "1")
                    " }",
                    "3: trailing characters after the object");
  expect_load_error("badcrlf.jsonl",
                    LINE(0, 1, "1") "\r\n" LINE(1, 1, "1") ",\r\n",
                    "2: trailing characters after the object");

  /* I/O: a missing file, a directory. */
  sim_trace t;
  char err[512], want[600];
  snprintf(want, sizeof want, "%s/missing.jsonl", tmpdir);
  assert_int_equal(sim_trace_load(&t, want, err, sizeof err), -1);
  assert_int_equal(strncmp(err, want, strlen(want)), 0);
  assert_string_equal(err + strlen(want), ": No such file or directory");
  assert_null(t.req);
  assert_int_equal(sim_trace_load(&t, tmpdir, err, sizeof err), -1);
  assert_int_equal(strncmp(err, tmpdir, strlen(tmpdir)), 0);
  assert_null(t.req);
}

static void test_load_good(void **state) {
  (void)state;
  sim_trace t;
  char err[512];

  /* Blank lines, CRLF, no final newline. */
  const char *path = write_str("good.jsonl",
                               "\n  \n" LINE(0, 1, "1, 2") "\r\n"
                               "\r\n" LINE(1, 2, "") "\n"
                               "\t\n" LINE(1.5, 3, "1, 2, 3"));
  assert_int_equal(sim_trace_load(&t, path, err, sizeof err), 0);
  assert_int_equal(t.n, 3);
  assert_int_equal(t.n_blocks, 5);
  assert_int_equal(t.req[2].arrival_ns, UINT64_C(1500000));
  assert_int_equal(t.req[2].n_blocks, 3);
  assert_int_equal(blocks_of(&t, 2)[2], 3);
  sim_trace_free(&t);

  /* Empty files, blank files. */
  path = write_str("empty.jsonl", "");
  assert_int_equal(sim_trace_load(&t, path, err, sizeof err), 0);
  assert_int_equal(t.n, 0);
  sim_trace_free(&t);
  path = write_str("blank.jsonl", "\n\r\n  \n");
  assert_int_equal(sim_trace_load(&t, path, err, sizeof err), 0);
  assert_int_equal(t.n, 0);
  sim_trace_free(&t);

  /* A line of 200,000 ids (about 1.3 MB, many times the read buffer)
   * between two short ones, then a malformed one: line 4. */
  size_t n_ids = 200000, cap = n_ids * 8 + 1024, n = 0;
  char *big = malloc(cap);
  assert_non_null(big);
  n += (size_t)snprintf(big + n, cap - n, "%s\n", LINE(0, 1, "7"));
  n += (size_t)snprintf(big + n, cap - n,
                        "{\"timestamp\": 1, \"input_length\": 1, "
                        "\"output_length\": 1, \"hash_ids\": [");
  for (size_t i = 0; i < n_ids; i++)
    n += (size_t)snprintf(big + n, cap - n, i ? ",%zu" : "%zu", i * 3);
  n += (size_t)snprintf(big + n, cap - n, "]}\n%s", LINE(2, 1, "8"));
  path = write_file("big.jsonl", big, n);
  assert_int_equal(sim_trace_load(&t, path, err, sizeof err), 0);
  assert_int_equal(t.n, 3);
  assert_int_equal(t.req[1].n_blocks, n_ids);
  assert_int_equal(t.n_blocks, n_ids + 2);
  assert_int_equal(blocks_of(&t, 1)[n_ids - 1], (n_ids - 1) * 3);
  assert_int_equal(blocks_of(&t, 2)[0], 8);
  sim_trace_free(&t);
  n += (size_t)snprintf(big + n, cap - n, "\n{\"timestamp\": 3}\n");
  expect_load_error("bigbad.jsonl", big, "4: missing key input_length");
  free(big);
}

/* Out-of-order arrivals: sorted, ties kept in file order, each request
 * with its own blocks. */
static void test_load_sort(void **state) {
  (void)state;
  sim_trace t;
  char err[512];
  const char *path = write_str("order.jsonl",
                               LINE(5, 0, "0") "\n" LINE(3, 1, "10") "\n"
                               LINE(5, 2, "20") "\n" LINE(1, 3, "30") "\n"
                               LINE(3, 4, "40") "\n" LINE(0, 5, "50") "\n");
  assert_int_equal(sim_trace_load(&t, path, err, sizeof err), 0);
  static const uint32_t want[] = {5, 3, 1, 4, 0, 2};
  assert_int_equal(t.n, 6);
  for (size_t i = 0; i < 6; i++) {
    assert_int_equal(t.req[i].output_tokens, want[i]);
    assert_int_equal(blocks_of(&t, i)[0], want[i] * 10);
  }
  sim_trace_free(&t);

  /* 10,007 requests, arrivals drawn from 0..49 ms (many ties). */
  size_t n = 10007, cap = n * 100, len = 0;
  char *data = malloc(cap);
  assert_non_null(data);
  uint64_t x = 12345;
  for (size_t i = 0; i < n; i++) {
    x = x * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
    len += (size_t)snprintf(data + len, cap - len,
                            "{\"timestamp\": %u, \"input_length\": 1, "
                            "\"output_length\": %zu, \"hash_ids\": [%zu]}\n",
                            (unsigned)((x >> 33) % 50), i, i);
  }
  path = write_file("shuffled.jsonl", data, len);
  free(data);
  assert_int_equal(sim_trace_load(&t, path, err, sizeof err), 0);
  assert_int_equal(t.n, n);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(blocks_of(&t, i)[0], t.req[i].output_tokens);
    if (i > 0) {
      assert_true(t.req[i - 1].arrival_ns <= t.req[i].arrival_ns);
      if (t.req[i - 1].arrival_ns == t.req[i].arrival_ns)
        assert_true(t.req[i - 1].output_tokens < t.req[i].output_tokens);
    }
  }
  sim_trace_free(&t);
}

/* ------------------------------------------------------------------------ */
/* 4. The bundled Mooncake trace                                             */
/* ------------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void test_mooncake(void **state) {
  (void)state;
  sim_trace t;
  char err[512];
  if (sim_trace_load(&t, SIM_TRACE_FILE, err, sizeof err) != 0)
    fail_msg("%s", err);
  uint64_t in = 0, out = 0, blocks = 0, consistent = 0;
  for (size_t i = 0; i < t.n; i++) {
    in += t.req[i].input_tokens;
    out += t.req[i].output_tokens;
    blocks += t.req[i].n_blocks;
    /* one id per started 512-token block of the prompt */
    consistent += t.req[i].n_blocks ==
                  (t.req[i].input_tokens + SIM_BLOCK_TOKENS - 1) /
                      SIM_BLOCK_TOKENS;
  }
  uint64_t *ids = malloc(t.n_blocks * sizeof *ids);
  assert_non_null(ids);
  memcpy(ids, t.blocks, t.n_blocks * sizeof *ids);
  qsort(ids, t.n_blocks, sizeof *ids, cmp_u64);
  size_t distinct = 0;
  for (size_t i = 0; i < t.n_blocks; i++)
    distinct += i == 0 || ids[i] != ids[i - 1];
  free(ids);
  uint64_t span = t.req[t.n - 1].arrival_ns - t.req[0].arrival_ns;
  double inf = sim_reuse_infinite(&t);

  printf("# mooncake: %zu requests over %.3f s; mean input %.1f tokens, "
         "mean output %.1f tokens\n",
         t.n, (double)span / 1e9, (double)in / (double)t.n,
         (double)out / (double)t.n);
  printf("# mooncake: %zu blocks, %zu distinct; prefix reuse ceiling: "
         "infinite %.4f",
         t.n_blocks, distinct, inf);
  static const size_t caps[] = {1000, 10000, 20000, 40000};
  double lru[4];
  for (size_t i = 0; i < 4; i++) {
    lru[i] = sim_reuse_lru(&t, caps[i]);
    printf(", LRU %zu %.4f", caps[i], lru[i]);
  }
  printf("\n");

  assert_int_equal(t.n, 3993);
  assert_int_equal(t.req[0].arrival_ns, 0);
  assert_int_equal(span, UINT64_C(1022025000000));
  assert_int_equal(in, UINT64_C(61194628));
  assert_int_equal(out, UINT64_C(595432));
  assert_int_equal(blocks, 121877);
  assert_int_equal(t.n_blocks, 121877);
  assert_int_equal(consistent, 3993);
  assert_int_equal(distinct, 43924);
  /* Here every repeated block is a prefix hit: 121,877 - 43,924. */
  assert_share(inf, 77953, 121877);
  /* Hits of the LRUs, also from an independent model (Python's
   * OrderedDict, blocks touched last to first). */
  static const uint64_t lru_hits[] = {10252, 51669, 69686, 77920};
  for (size_t i = 0; i < 4; i++)
    assert_share(lru[i], lru_hits[i], 121877);
  assert_share(sim_reuse_lru(&t, 43924), 77953, 121877);
  sim_trace_free(&t);
}

/* ------------------------------------------------------------------------ */
/* 5. Reuse ceilings                                                         */
/* ------------------------------------------------------------------------ */

static void test_reuse_empty(void **state) {
  (void)state;
  sim_trace t = {0};
  assert_true(sim_reuse_infinite(&t) == 0.0);
  assert_true(sim_reuse_lru(&t, 10) == 0.0);
  add_req(&t, NULL, 0); /* requests without blocks only */
  add_req(&t, NULL, 0);
  assert_true(sim_reuse_infinite(&t) == 0.0);
  assert_true(sim_reuse_lru(&t, 10) == 0.0);
  ADD(&t, 1, 2);
  ADD(&t, 1, 2);
  assert_share(sim_reuse_infinite(&t), 2, 4);
  assert_true(sim_reuse_lru(&t, 0) == 0.0); /* no cache at all */
  assert_share(sim_reuse_lru(&t, 2), 2, 4);
  /* cap 1: the first request leaves [1]; the second hits 1, misses 2 */
  assert_share(sim_reuse_lru(&t, 1), 1, 4);
  sim_trace_free(&t);
}

static void test_reuse_infinite(void **state) {
  (void)state;
  sim_trace t = {0};
  ADD(&t, 1, 2, 3);       /* 0: nothing cached yet */
  ADD(&t, 1, 2, 4);       /* 2: 1, 2 */
  ADD(&t, 5, 2, 3);       /* 0: 5 is new, so 2, 3 do not count */
  ADD(&t, 1, 2, 3, 4, 5); /* 5: all seen before */
  ADD(&t, 6, 6);          /* 0: counted before the request's own blocks */
  ADD(&t, 6, 6, 7);       /* 2 */
  assert_share(sim_reuse_infinite(&t), 9, 19);
  /* A cache as large as the distinct blocks never evicts. */
  assert_share(sim_reuse_lru(&t, 7), 9, 19);
  assert_share(sim_reuse_lru(&t, SIZE_MAX), 9, 19);
  sim_trace_free(&t);
}

static void test_reuse_lru(void **state) {
  (void)state;
  /* Capacity matters. Cache most recent first; a request touches its
   * blocks last to first, so its first block is the most recent. */
  sim_trace t = {0};
  ADD(&t, 1, 2, 3); /* 0 hits; cap 4: [1 2 3] */
  ADD(&t, 7, 8, 9); /* 0; cap 4: [7 8 9 1] (2, 3 evicted) */
  ADD(&t, 1, 2, 3); /* cap 4: 1 (2 missing); cap 6: 3 */
  assert_share(sim_reuse_infinite(&t), 3, 9);
  assert_share(sim_reuse_lru(&t, 6), 3, 9);
  assert_share(sim_reuse_lru(&t, 5), 2, 9); /* [7 8 9 1 2]: 1, 2 hit */
  assert_share(sim_reuse_lru(&t, 4), 1, 9);
  assert_share(sim_reuse_lru(&t, 3), 0, 9); /* [7 8 9] */
  sim_trace_free(&t);

  /* A later block cached, an earlier one evicted: the prefix stops. */
  t = (sim_trace){0};
  ADD(&t, 1, 2, 3); /* cap 3: [1 2 3] */
  ADD(&t, 9, 2, 3); /* 0 hits (9 new); touches 3, 2, 9: [9 2 3], 1 out */
  ADD(&t, 1, 2, 3); /* 2 and 3 are cached, 1 is not: 0 hits */
  assert_share(sim_reuse_lru(&t, 3), 0, 9);
  assert_share(sim_reuse_lru(&t, 4), 3, 9); /* [9 2 3 1]: all 3 */
  assert_share(sim_reuse_infinite(&t), 3, 9);
  sim_trace_free(&t);

  /* A request longer than the cache keeps its leading blocks. */
  t = (sim_trace){0};
  ADD(&t, 1, 2, 3, 4); /* cap 2: [1 2] */
  ADD(&t, 1, 2, 3);    /* 2 hits */
  ADD(&t, 3);          /* cap 2: [1 2] again after the request: 0 */
  assert_share(sim_reuse_lru(&t, 2), 2, 8);
  assert_share(sim_reuse_lru(&t, 1), 1, 8); /* [1]: 1 hit, then [1] */
  assert_share(sim_reuse_infinite(&t), 4, 8);
  sim_trace_free(&t);

  /* Recency is refreshed by a hit: 1 2 stay, 3 goes. */
  t = (sim_trace){0};
  ADD(&t, 1);    /* [1] */
  ADD(&t, 2);    /* [2 1] */
  ADD(&t, 1);    /* hit; [1 2] */
  ADD(&t, 3);    /* [3 1], 2 out */
  ADD(&t, 1, 2); /* 1 hits, 2 misses; [1 2], 3 out */
  ADD(&t, 3);    /* miss */
  assert_share(sim_reuse_lru(&t, 2), 2, 7);
  assert_share(sim_reuse_infinite(&t), 4, 7);
  sim_trace_free(&t);
}

/* 10^6 distinct blocks in 1000 requests of 1000, then the same again. */
static void test_reuse_million(void **state) {
  (void)state;
  const uint32_t per = 1000, n_req = 1000;
  sim_trace t = {0};
  t.cap = 2 * n_req;
  t.cap_blocks = (size_t)2 * per * n_req;
  t.req = calloc(t.cap, sizeof *t.req);
  t.blocks = malloc(t.cap_blocks * sizeof *t.blocks);
  assert_non_null(t.req);
  assert_non_null(t.blocks);
  for (uint32_t pass = 0; pass < 2; pass++) {
    for (uint32_t r = 0; r < n_req; r++) {
      sim_req *q = &t.req[t.n++];
      q->arrival_ns = t.n;
      q->n_blocks = per;
      q->blocks_off = t.n_blocks;
      for (uint32_t b = 0; b < per; b++) /* spread-out ids */
        t.blocks[t.n_blocks++] =
            ((uint64_t)r * per + b) * UINT64_C(0x9E3779B97F4A7C15);
    }
  }
  /* The first pass alone: all distinct, nothing to reuse. */
  t.n = n_req;
  assert_true(sim_reuse_lru(&t, 1000) == 0.0);
  assert_true(sim_reuse_infinite(&t) == 0.0);
  /* Both passes. A cache of one request: the next one never finds its
   * blocks. One block short of the cycle: only the oldest block, the last
   * of request 0 (its blocks are touched last to first), is gone when the
   * second pass starts; request 0 hits its 999 first blocks, and its
   * misses then evict, one after the other, the blocks it touches next
   * and finally the last block of request 1, which hits 999 in turn, and
   * so on: 1000 * 999 hits. A cache of the whole cycle serves the whole
   * second pass. */
  t.n = 2 * n_req;
  assert_true(sim_reuse_lru(&t, 1000) == 0.0);
  assert_share(sim_reuse_lru(&t, 999999), 999000, 2000000);
  assert_true(sim_reuse_lru(&t, 1000000) == 0.5);
  assert_true(sim_reuse_infinite(&t) == 0.5);
  sim_trace_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_lines),
      cmocka_unit_test(test_timestamps),
      cmocka_unit_test(test_blank_lines),
      cmocka_unit_test(test_malformed_lines),
      cmocka_unit_test(test_malformed_more),
      cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_load_good),
      cmocka_unit_test(test_load_sort),
      cmocka_unit_test(test_mooncake),
      cmocka_unit_test(test_reuse_empty),
      cmocka_unit_test(test_reuse_infinite),
      cmocka_unit_test(test_reuse_lru),
      cmocka_unit_test(test_reuse_million),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
