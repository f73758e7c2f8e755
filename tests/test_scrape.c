/*
 * Tests of ilb_scrape: the Prometheus text parser and the model-server
 * dialects (suite telemetry).
 *
 *  - every fixture in tests/fixtures/metrics (one /metrics page per server,
 *    written from the servers' documented names) gives the values worked
 *    out by hand from the page, written below next to their arithmetic;
 *  - rates and interval means over two pages, counter resets, the label
 *    filter, auto-detection and configured dialects;
 *  - the parser: exact error lines and messages of crafted pages, odd but
 *    valid syntax, numbers (huge, long, locale), "# EOF", CRLF, NUL bytes,
 *    line_max;
 *  - streaming: every split point and byte-by-byte feeding of each fixture
 *    give the result of one feed; pieces are copied to buffers of their
 *    exact size so ASan / valgrind catch a read past data + len;
 *  - fuzz-style: every prefix of each fixture, every one-byte deletion,
 *    1 MB of seeded garbage in random-sized pieces: ILB_EPARSE (or a page
 *    ilb_replica_report accepts), never a crash, the same error line
 *    however the bytes are split;
 *  - allocation: one allocation at ilb_scrape_new, none in feed / finish,
 *    ILB_ENOMEM with nothing leaked when it fails.
 *
 * Links the static library to test the decimal reader (number.c) too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <inferlb/inferlb.h>

#include "telemetry/metrics.h"
#include "testutil.h"

#ifndef ILB_FIXTURES_DIR
#error "ILB_FIXTURES_DIR must name tests/fixtures/metrics"
#endif

#define SEC UINT64_C(1000000000)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/* Scrapes still open when a test fails are freed by the group teardown. */
#define MAX_SCRAPES 8
static ilb_scrape *open_scrapes[MAX_SCRAPES];

static ilb_scrape *track(ilb_scrape *s) {
  for (size_t i = 0; i < MAX_SCRAPES; i++)
    if (!open_scrapes[i]) {
      open_scrapes[i] = s;
      return s;
    }
  fail_msg("too many scrapes open");
  return NULL;
}

static void drop(ilb_scrape *s) {
  for (size_t i = 0; i < MAX_SCRAPES; i++)
    if (open_scrapes[i] == s)
      open_scrapes[i] = NULL;
  ilb_scrape_free(s);
}

static int teardown_all(void **state) {
  (void)state;
  for (size_t i = 0; i < MAX_SCRAPES; i++) {
    ilb_scrape_free(open_scrapes[i]);
    open_scrapes[i] = NULL;
  }
  return free_leftover_pools(state);
}

static ilb_scrape *mk(int32_t dialect, const char *key, const char *value) {
  ilb_scrape_config cfg;
  assert_rc(ilb_scrape_config_init(&cfg), ILB_OK);
  cfg.dialect = dialect;
  cfg.label_key = key;
  cfg.label_value = value;
  ilb_scrape *s = NULL;
  assert_rc(ilb_scrape_new(&s, &cfg, NULL), ILB_OK);
  assert_non_null(s);
  return track(s);
}

static ilb_scrape *mk_line_max(size_t line_max) {
  ilb_scrape_config cfg;
  assert_rc(ilb_scrape_config_init(&cfg), ILB_OK);
  cfg.line_max = line_max;
  ilb_scrape *s = NULL;
  assert_rc(ilb_scrape_new(&s, &cfg, NULL), ILB_OK);
  return track(s);
}

typedef struct {
  char *p;
  size_t n;
} page;

static page load(const char *name) {
  const char *dir = getenv("ILB_FIXTURES");
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir ? dir : ILB_FIXTURES_DIR, name);
  FILE *f = fopen(path, "rb");
  if (!f)
    fail_msg("cannot open fixture %s", path);
  page pg = {NULL, 0};
  size_t cap = 0;
  for (;;) {
    if (pg.n == cap) {
      cap = cap ? 2 * cap : 65536;
      pg.p = realloc(pg.p, cap);
      assert_non_null(pg.p);
    }
    size_t got = fread(pg.p + pg.n, 1, cap - pg.n, f);
    if (!got)
      break;
    pg.n += got;
  }
  fclose(f);
  assert_true(pg.n > 0);
  return pg;
}

static const char *const fixtures[] = {"vllm.txt",     "vllm_old.txt",
                                       "sglang.txt",   "llamacpp.txt",
                                       "triton.txt",   "tgi.txt"};
#define N_FIXTURES (sizeof(fixtures) / sizeof(fixtures[0]))

/* A telemetry record with every byte poisoned but struct_size. */
static ilb_telemetry poisoned(void) {
  ilb_telemetry t;
  memset(&t, 0xA5, sizeof t);
  t.struct_size = sizeof t;
  return t;
}

/* Feed a whole page in one piece and finish it. */
static int parse(ilb_telemetry *t, ilb_scrape *s, const char *p, size_t n,
                 uint64_t ts) {
  int rc = ilb_scrape_feed(s, p, n);
  if (rc != ILB_OK && rc != ILB_EPARSE)
    fail_msg("feed returned %s", ilb_err_name(rc));
  *t = poisoned();
  int frc = ilb_scrape_finish(t, s, ts);
  if (rc == ILB_EPARSE && frc != ILB_EPARSE)
    fail_msg("feed failed but finish returned %s", ilb_err_name(frc));
  return frc;
}

static int parse_str(ilb_telemetry *t, ilb_scrape *s, const char *text,
                     uint64_t ts) {
  return parse(t, s, text, strlen(text), ts);
}

/* Feed p as pieces [0,k) and [k,n), each copied to a buffer of exactly its
 * size (so that a read past data + len is an ASan / valgrind error). */
static int feed_exact(ilb_scrape *s, const char *p, size_t n) {
  char *copy = malloc(n ? n : 1);
  assert_non_null(copy);
  memcpy(copy, p, n);
  int rc = ilb_scrape_feed(s, n ? copy : NULL, n);
  free(copy);
  return rc;
}

static double fabs_d(double x) { return x < 0 ? -x : x; }

static double sig_value(const ilb_telemetry *t, int sig) {
  switch (sig) {
  case ILB_SIGNAL_REQUESTS_WAITING: return t->requests_waiting;
  case ILB_SIGNAL_REQUESTS_RUNNING: return t->requests_running;
  case ILB_SIGNAL_KV_CACHE_USAGE: return t->kv_cache_usage;
  case ILB_SIGNAL_GPU_UTILIZATION: return t->gpu_utilization;
  case ILB_SIGNAL_GPU_MEMORY_FREE: return t->gpu_memory_free;
  case ILB_SIGNAL_GPU_MEMORY_TOTAL: return t->gpu_memory_total;
  case ILB_SIGNAL_PREFIX_HIT_RATE: return t->prefix_hit_rate;
  case ILB_SIGNAL_GEN_TOKENS_PER_S: return t->gen_tokens_per_s;
  case ILB_SIGNAL_TTFT: return t->ttft_s;
  case ILB_SIGNAL_QUEUE_TIME: return t->queue_time_s;
  case ILB_SIGNAL_REQUEST_RATE: return t->request_rate;
  case ILB_SIGNAL_MAX_CONCURRENCY: return t->max_concurrency;
  case ILB_SIGNAL_MODEL_READY: return t->model_ready;
  case ILB_SIGNAL_KV_BLOCK_SIZE: return t->kv_block_size;
  case ILB_SIGNAL_KV_BLOCKS_TOTAL: return t->kv_blocks_total;
  }
  fail_msg("unknown signal %d", sig);
  return 0;
}

/* The signal is present and equals want to 12 significant digits (the
 * values below are decimal fractions; the parser is within an ulp). */
#define assert_sig(t, sig, want) check_sig(&(t), sig, want, #sig, __LINE__)
static void check_sig(const ilb_telemetry *t, int sig, double want,
                      const char *name, int line) {
  if (!(t->present & ILB_SIGNAL_BIT(sig)))
    fail_msg("line %d: %s absent (present = %#llx)", line, name,
             (unsigned long long)t->present);
  double got = sig_value(t, sig);
  double tol = 1e-12 * (fabs_d(want) > 1 ? fabs_d(want) : 1);
  if (!(got >= want - tol && got <= want + tol))
    fail_msg("line %d: %s = %.17g, expected %.17g", line, name, got, want);
}

#define B(sig) ILB_SIGNAL_BIT(ILB_SIGNAL_##sig)
#define assert_present(t, mask)                                              \
  do {                                                                       \
    if ((t).present != (uint64_t)(mask))                                     \
      fail_msg("present = %#llx, expected %#llx",                            \
               (unsigned long long)(t).present,                              \
               (unsigned long long)(mask));                                  \
  } while (0)

static void assert_error(const ilb_scrape *s, uint64_t want_line,
                         const char *want_what) {
  uint64_t line = 0;
  const char *what = NULL;
  assert_rc(ilb_scrape_error(&line, &what, s), ILB_OK);
  assert_non_null(what);
  if (line != want_line || strcmp(what, want_what))
    fail_msg("error at line %llu \"%s\", expected line %llu \"%s\"",
             (unsigned long long)line, what, (unsigned long long)want_line,
             want_what);
}

/* ------------------------------------------------------------------------ */
/* Names, config, construction                                               */
/* ------------------------------------------------------------------------ */

static void test_names_and_config(void **state) {
  (void)state;
  const char *want[] = {"auto", "vllm", "sglang", "llamacpp", "triton", "tgi"};
  for (int32_t i = 0; i < 6; i++)
    assert_string_equal(ilb_dialect_name(i), want[i]);
  assert_int_equal(ILB_DIALECT_TGI, 5);
  assert_null(ilb_dialect_name(-1));
  assert_null(ilb_dialect_name(6));

  ilb_scrape_config cfg;
  memset(&cfg, 0x5A, sizeof cfg);
  assert_rc(ilb_scrape_config_init(&cfg), ILB_OK);
  assert_int_equal(cfg.struct_size, sizeof cfg);
  assert_int_equal(cfg.dialect, ILB_DIALECT_AUTO);
  assert_int_equal(cfg.reserved0, 0);
  assert_null(cfg.label_key);
  assert_null(cfg.label_value);
  assert_int_equal(cfg.line_max, 65536);
  assert_rc(ilb_scrape_config_init(NULL), ILB_EINVAL);
}

static void test_new_errors(void **state) {
  (void)state;
  ilb_scrape *s = (ilb_scrape *)&s; /* must be reset to NULL on error */
  ilb_scrape_config cfg;
  assert_rc(ilb_scrape_new(NULL, NULL, NULL), ILB_EINVAL);

  /* defaults */
  assert_rc(ilb_scrape_new(&s, NULL, NULL), ILB_OK);
  assert_non_null(s);
  int32_t d = -1;
  assert_rc(ilb_scrape_dialect(&d, s), ILB_OK);
  assert_int_equal(d, ILB_DIALECT_AUTO);
  ilb_scrape_free(s);

#define EXPECT_NEW(rc, ...)                                                  \
  do {                                                                       \
    ilb_scrape_config_init(&cfg);                                            \
    __VA_ARGS__;                                                             \
    s = (ilb_scrape *)&s;                                                    \
    assert_rc(ilb_scrape_new(&s, &cfg, NULL), rc);                           \
    if (rc)                                                                  \
      assert_null(s);                                                        \
    else                                                                     \
      ilb_scrape_free(s);                                                    \
  } while (0)

  EXPECT_NEW(ILB_EINVAL, cfg.reserved0 = 1);
  EXPECT_NEW(ILB_EINVAL, cfg.dialect = 6);
  EXPECT_NEW(ILB_EINVAL, cfg.dialect = -1);
  EXPECT_NEW(ILB_OK, cfg.dialect = ILB_DIALECT_TGI);
  EXPECT_NEW(ILB_ERANGE, cfg.line_max = 255);
  EXPECT_NEW(ILB_ERANGE, cfg.line_max = 0);
  EXPECT_NEW(ILB_ERANGE, cfg.line_max = 16777217);
  EXPECT_NEW(ILB_OK, cfg.line_max = 256);
  EXPECT_NEW(ILB_OK, cfg.line_max = 16777216);
  EXPECT_NEW(ILB_ESIZE, cfg.struct_size = sizeof cfg - 1);
  EXPECT_NEW(ILB_ESIZE, cfg.struct_size = 0);

  char long_label[ILB_ID_MAX + 2];
  memset(long_label, 'k', sizeof long_label);
  long_label[ILB_ID_MAX + 1] = 0; /* 256 bytes */
  EXPECT_NEW(ILB_ETOOBIG, cfg.label_key = long_label);
  EXPECT_NEW(ILB_ETOOBIG, cfg.label_value = long_label);
  long_label[ILB_ID_MAX] = 0; /* 255 bytes: the limit */
  EXPECT_NEW(ILB_OK, cfg.label_key = long_label; cfg.label_value = long_label);
#undef EXPECT_NEW

  /* A config from a newer caller: a zero tail is fine, any other is not. */
  struct {
    ilb_scrape_config c;
    unsigned char tail[16];
  } big;
  memset(&big, 0, sizeof big);
  ilb_scrape_config_init(&big.c);
  big.c.struct_size = sizeof big;
  assert_rc(ilb_scrape_new(&s, &big.c, NULL), ILB_OK);
  ilb_scrape_free(s);
  big.tail[3] = 1;
  assert_rc(ilb_scrape_new(&s, &big.c, NULL), ILB_ESIZE);
  assert_null(s);

  /* The host is checked as ilb_pool_new checks it. */
  ilb_host h;
  ilb_host_init(&h);
  h.alloc = (void *(*)(size_t, void *))0x1; /* alloc without free */
  assert_rc(ilb_scrape_new(&s, NULL, &h), ILB_EINVAL);
  ilb_host_init(&h);
  h.reserved0 = 7;
  assert_rc(ilb_scrape_new(&s, NULL, &h), ILB_EINVAL);
  ilb_host_init(&h);
  h.struct_size = 8;
  assert_rc(ilb_scrape_new(&s, NULL, &h), ILB_ESIZE);
  assert_null(s);
}

static void test_null_args(void **state) {
  (void)state;
  ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
  ilb_telemetry t = poisoned();
  uint64_t line;
  const char *what;
  int32_t d;
  assert_rc(ilb_scrape_feed(NULL, "a 1\n", 4), ILB_EINVAL);
  assert_rc(ilb_scrape_feed(s, NULL, 1), ILB_EINVAL);
  assert_rc(ilb_scrape_feed(s, NULL, 0), ILB_OK);
  assert_rc(ilb_scrape_finish(NULL, s, 1), ILB_EINVAL);
  assert_rc(ilb_scrape_finish(&t, NULL, 1), ILB_EINVAL);
  assert_rc(ilb_scrape_error(&line, &what, NULL), ILB_EINVAL);
  assert_rc(ilb_scrape_error(&line, &what, s), ILB_ENOENT);
  assert_rc(ilb_scrape_error(NULL, NULL, s), ILB_ENOENT);
  assert_rc(ilb_scrape_dialect(NULL, s), ILB_EINVAL);
  assert_rc(ilb_scrape_dialect(&d, NULL), ILB_EINVAL);
  ilb_scrape_free(NULL);

  /* A struct_size that does not reach `present` is ILB_ESIZE, and the page
   * is still there for a correct call. */
  assert_rc(ilb_scrape_feed(s, "tgi_queue_size 3\n", 17), ILB_OK);
  t = poisoned();
  t.struct_size = offsetof(ilb_telemetry, present) + 7;
  assert_rc(ilb_scrape_finish(&t, s, 5), ILB_ESIZE);
  assert_int_equal(t.present, poisoned().present);
  t = poisoned();
  assert_rc(ilb_scrape_finish(&t, s, 5), ILB_OK);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 3);
  assert_int_equal(t.timestamp_ns, 5);
  assert_int_equal(t.struct_size, sizeof t);

  /* A smaller output struct gets exactly its prefix. */
  assert_rc(ilb_scrape_feed(s, "tgi_queue_size 3\n", 17), ILB_OK);
  t = poisoned();
  t.struct_size = offsetof(ilb_telemetry, requests_running);
  assert_rc(ilb_scrape_finish(&t, s, 6), ILB_OK);
  assert_int_equal(t.struct_size, offsetof(ilb_telemetry, requests_running));
  assert_int_equal(t.present, B(REQUESTS_WAITING));
  assert_true(t.requests_waiting == 3);
  ilb_telemetry p = poisoned();
  assert_memory_equal(&t.requests_running, &p.requests_running,
                      sizeof t - offsetof(ilb_telemetry, requests_running));
  drop(s);
}

/* ------------------------------------------------------------------------ */
/* Allocation                                                                */
/* ------------------------------------------------------------------------ */

typedef struct {
  long live;
  long calls;
  long fail_from; /* fail every call from this one on (1-based); 0 never */
  size_t last_size;
} counting;

static void *c_alloc(size_t n, void *ud) {
  counting *c = ud;
  c->calls++;
  if (c->fail_from && c->calls >= c->fail_from)
    return NULL;
  void *p = malloc(n);
  if (p) {
    c->live++;
    c->last_size = n;
  }
  return p;
}

static void c_free(void *p, void *ud) {
  counting *c = ud;
  if (p) {
    c->live--;
    free(p);
  }
}

static void test_allocation(void **state) {
  (void)state;
  counting c = {0, 0, 0, 0};
  ilb_host h;
  ilb_host_init(&h);
  h.alloc = c_alloc;
  h.free = c_free;
  h.user_data = &c;
  ilb_scrape_config cfg;
  ilb_scrape_config_init(&cfg);
  cfg.line_max = 4096;
  cfg.label_key = "model";
  cfg.label_value = "llama-3-8b";

  /* Failing allocator: ILB_ENOMEM, nothing live. */
  c.fail_from = 1;
  ilb_scrape *s = (ilb_scrape *)&s;
  assert_rc(ilb_scrape_new(&s, &cfg, &h), ILB_ENOMEM);
  assert_null(s);
  assert_int_equal(c.live, 0);
  assert_int_equal(c.calls, 1);

  /* One allocation of about line_max plus the object, and no other. */
  c = (counting){0, 0, 0, 0};
  assert_rc(ilb_scrape_new(&s, &cfg, &h), ILB_OK);
  track(s);
  assert_int_equal(c.calls, 1);
  assert_int_equal(c.live, 1);
  assert_true(c.last_size >= 4096 && c.last_size <= 4096 + 4096);
  /* Feeding and finishing pages -- good, bad, split -- never allocates,
   * even with the allocator failing every call from now on. */
  c.fail_from = 2;
  page pg = load("triton.txt");
  ilb_telemetry t;
  for (int round = 0; round < 3; round++) {
    for (size_t k = 0; k < pg.n; k += 777)
      assert_rc(ilb_scrape_feed(s, pg.p + k, pg.n - k < 777 ? pg.n - k : 777),
                ILB_OK);
    t = poisoned();
    assert_rc(ilb_scrape_finish(&t, s, (uint64_t)(round + 1) * SEC), ILB_OK);
    assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 10);
    assert_rc(parse_str(&t, s, "bad{ 1\n", 9 * SEC), ILB_EPARSE);
  }
  free(pg.p);
  assert_int_equal(c.calls, 1);
  drop(s);
  assert_int_equal(c.live, 0);
}

/* ------------------------------------------------------------------------ */
/* Fixtures, one page each                                                   */
/* ------------------------------------------------------------------------ */

static ilb_telemetry parse_fixture(const char *name, int32_t dialect,
                                   const char *key, const char *value,
                                   int32_t want_dialect) {
  ilb_scrape *s = mk(dialect, key, value);
  page pg = load(name);
  ilb_telemetry t;
  assert_rc(parse(&t, s, pg.p, pg.n, 100 * SEC), ILB_OK);
  assert_int_equal(t.timestamp_ns, 100 * SEC);
  assert_int_equal(t.struct_size, sizeof t);
  assert_int_equal(t.stale, 0);
  int32_t d = -1;
  assert_rc(ilb_scrape_dialect(&d, s), ILB_OK);
  assert_int_equal(d, want_dialect);
  free(pg.p);
  drop(s);
  return t;
}

static void test_fixture_vllm(void **state) {
  (void)state;
  ilb_telemetry t = parse_fixture("vllm.txt", ILB_DIALECT_AUTO, NULL, NULL,
                                  ILB_DIALECT_VLLM);
  /* Two data-parallel engines of one model. First page: gauges only. */
  assert_present(t, B(REQUESTS_WAITING) | B(REQUESTS_RUNNING) |
                        B(KV_CACHE_USAGE) | B(KV_BLOCK_SIZE) |
                        B(KV_BLOCKS_TOTAL));
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 3 + 1);
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 12 + 9);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, (0.625 + 0.375) / 2);
  assert_sig(t, ILB_SIGNAL_KV_BLOCK_SIZE, 16);
  assert_sig(t, ILB_SIGNAL_KV_BLOCKS_TOTAL, 27000 + 27000);
}

static void test_fixture_vllm_old(void **state) {
  (void)state;
  ilb_telemetry t = parse_fixture("vllm_old.txt", ILB_DIALECT_AUTO, NULL,
                                  NULL, ILB_DIALECT_VLLM);
  assert_present(t, B(REQUESTS_WAITING) | B(REQUESTS_RUNNING) |
                        B(KV_CACHE_USAGE) | B(KV_BLOCK_SIZE) |
                        B(KV_BLOCKS_TOTAL));
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 2);
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 7);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 0.8125); /* gpu_cache_usage_perc */
  assert_sig(t, ILB_SIGNAL_KV_BLOCK_SIZE, 16);
  assert_sig(t, ILB_SIGNAL_KV_BLOCKS_TOTAL, 9000);
}

static void test_fixture_sglang(void **state) {
  (void)state;
  ilb_telemetry t = parse_fixture("sglang.txt", ILB_DIALECT_AUTO, NULL, NULL,
                                  ILB_DIALECT_SGLANG);
  assert_present(t, B(REQUESTS_WAITING) | B(REQUESTS_RUNNING) |
                        B(KV_CACHE_USAGE) | B(PREFIX_HIT_RATE) |
                        B(GEN_TOKENS_PER_S));
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 6);
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 48);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 0.42);
  assert_sig(t, ILB_SIGNAL_PREFIX_HIT_RATE, 0.31);
  assert_sig(t, ILB_SIGNAL_GEN_TOKENS_PER_S, 1523.7);
}

static void test_fixture_llamacpp(void **state) {
  (void)state;
  ilb_telemetry t = parse_fixture("llamacpp.txt", ILB_DIALECT_AUTO, NULL,
                                  NULL, ILB_DIALECT_LLAMACPP);
  /* No KV-cache gauge in current llama.cpp: kv_cache_usage absent. */
  assert_present(t, B(REQUESTS_WAITING) | B(REQUESTS_RUNNING) |
                        B(GEN_TOKENS_PER_S));
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 2);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 1);
  assert_sig(t, ILB_SIGNAL_GEN_TOKENS_PER_S, 48.1532);
}

static void test_fixture_triton(void **state) {
  (void)state;
  ilb_telemetry t = parse_fixture("triton.txt", ILB_DIALECT_AUTO, NULL, NULL,
                                  ILB_DIALECT_TRITON);
  /* Two GPUs, two TensorRT-LLM models, no filter: both models. */
  assert_present(t, B(GPU_UTILIZATION) | B(GPU_MEMORY_TOTAL) |
                        B(GPU_MEMORY_FREE) | B(REQUESTS_RUNNING) |
                        B(REQUESTS_WAITING) | B(MAX_CONCURRENCY) |
                        B(KV_CACHE_USAGE) | B(KV_BLOCKS_TOTAL) |
                        B(KV_BLOCK_SIZE));
  assert_sig(t, ILB_SIGNAL_GPU_UTILIZATION, (0.82 + 0.58) / 2);
  assert_sig(t, ILB_SIGNAL_GPU_MEMORY_TOTAL, 2 * 85899345920.0);
  /* 160 GiB - (70 + 60) GiB */
  assert_sig(t, ILB_SIGNAL_GPU_MEMORY_FREE,
             2 * 85899345920.0 - (75161927680.0 + 64424509440.0));
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 10 + 6); /* "active" */
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 3 + 0);
  assert_sig(t, ILB_SIGNAL_MAX_CONCURRENCY, 64 + 32);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, (4500.0 + 1000) / (6000 + 4000));
  assert_sig(t, ILB_SIGNAL_KV_BLOCKS_TOTAL, 6000 + 4000);
  assert_sig(t, ILB_SIGNAL_KV_BLOCK_SIZE, 64);
}

static void test_fixture_tgi(void **state) {
  (void)state;
  ilb_telemetry t = parse_fixture("tgi.txt", ILB_DIALECT_AUTO, NULL, NULL,
                                  ILB_DIALECT_TGI);
  assert_present(t, B(REQUESTS_WAITING) | B(REQUESTS_RUNNING));
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 4);
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 18);
}

/* Every fixture's output goes through ilb_replica_report unchanged. */
static void test_fixtures_reportable(void **state) {
  (void)state;
  ilb_pool *pool;
  assert_rc(ilb_pool_new(&pool, NULL), ILB_OK);
  track_pool(pool);
  add_replica(pool, "r", 1, 0, NULL);
  for (size_t f = 0; f < N_FIXTURES; f++) {
    ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
    page pg = load(fixtures[f]);
    ilb_telemetry t;
    assert_rc(parse(&t, s, pg.p, pg.n, 1), ILB_OK);
    assert_true(t.present != 0);
    assert_rc(ilb_replica_report(pool, "r", &t), ILB_OK);
    free(pg.p);
    drop(s);
  }
  free_pool(pool);
}

/* ------------------------------------------------------------------------ */
/* Counters over several pages                                               */
/* ------------------------------------------------------------------------ */

#define VM "model_name=\"meta-llama/Llama-3.1-8B-Instruct\""
/* vllm.txt ten seconds later. */
static const char vllm_page2[] =
    "vllm:num_requests_running{engine=\"0\"," VM "} 10.0\n"
    "vllm:num_requests_running{engine=\"1\"," VM "} 10.0\n"
    "vllm:prefix_cache_queries_total{engine=\"0\"," VM "} 101000.0\n"
    "vllm:prefix_cache_queries_total{engine=\"1\"," VM "} 60500.0\n"
    "vllm:prefix_cache_hits_total{engine=\"0\"," VM "} 40600.0\n"
    "vllm:prefix_cache_hits_total{engine=\"1\"," VM "} 20300.0\n"
    "vllm:generation_tokens_total{engine=\"0\"," VM "} 502000.0\n"
    "vllm:generation_tokens_total{engine=\"1\"," VM "} 301000.0\n"
    "vllm:time_to_first_token_seconds_sum{engine=\"0\"," VM "} 122.0\n"
    "vllm:time_to_first_token_seconds_sum{engine=\"1\"," VM "} 81.0\n"
    "vllm:time_to_first_token_seconds_count{engine=\"0\"," VM "} 1012.0\n"
    "vllm:time_to_first_token_seconds_count{engine=\"1\"," VM "} 608.0\n";

static void test_vllm_rates(void **state) {
  (void)state;
  ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
  page pg = load("vllm.txt");
  ilb_telemetry t;
  assert_rc(parse(&t, s, pg.p, pg.n, 100 * SEC), ILB_OK);
  assert_rc(parse_str(&t, s, vllm_page2, 110 * SEC), ILB_OK);
  assert_present(t, B(REQUESTS_RUNNING) | B(PREFIX_HIT_RATE) |
                        B(GEN_TOKENS_PER_S) | B(TTFT));
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 20);
  /* hits 60000 -> 60900, queries 160000 -> 161500 */
  assert_sig(t, ILB_SIGNAL_PREFIX_HIT_RATE, 900.0 / 1500.0);
  /* 800000 -> 803000 tokens in 10 s */
  assert_sig(t, ILB_SIGNAL_GEN_TOKENS_PER_S, 3000.0 / 10.0);
  /* sum 200 -> 203 s over count 1600 -> 1620 */
  assert_sig(t, ILB_SIGNAL_TTFT, 3.0 / 20.0);

  /* The same counters again: no query, no first token in the interval, so
   * no hit rate and no TTFT; throughput 0. */
  assert_rc(parse_str(&t, s, vllm_page2, 115 * SEC), ILB_OK);
  assert_present(t, B(REQUESTS_RUNNING) | B(GEN_TOKENS_PER_S));
  assert_sig(t, ILB_SIGNAL_GEN_TOKENS_PER_S, 0);

  /* The same timestamp again: no interval, no rate. */
  assert_rc(parse_str(&t, s, vllm_page2, 115 * SEC), ILB_OK);
  assert_present(t, B(REQUESTS_RUNNING));

  /* Engine 1 restarted: its counters went back near 0, the sums went
   * down: no rates this page, and it is the new baseline. */
  const char restarted[] =
      "vllm:generation_tokens_total{engine=\"0\"," VM "} 503000.0\n"
      "vllm:generation_tokens_total{engine=\"1\"," VM "} 100.0\n"
      "vllm:prefix_cache_queries_total{engine=\"0\"," VM "} 102000.0\n"
      "vllm:prefix_cache_queries_total{engine=\"1\"," VM "} 50.0\n"
      "vllm:prefix_cache_hits_total{engine=\"0\"," VM "} 41000.0\n"
      "vllm:prefix_cache_hits_total{engine=\"1\"," VM "} 10.0\n";
  assert_rc(parse_str(&t, s, restarted, 125 * SEC), ILB_OK);
  assert_present(t, 0);
  const char after[] =
      "vllm:generation_tokens_total{engine=\"0\"," VM "} 504000.0\n"
      "vllm:generation_tokens_total{engine=\"1\"," VM "} 1100.0\n"
      "vllm:prefix_cache_queries_total{engine=\"0\"," VM "} 102400.0\n"
      "vllm:prefix_cache_queries_total{engine=\"1\"," VM "} 450.0\n"
      "vllm:prefix_cache_hits_total{engine=\"0\"," VM "} 41100.0\n"
      "vllm:prefix_cache_hits_total{engine=\"1\"," VM "} 110.0\n";
  assert_rc(parse_str(&t, s, after, 145 * SEC), ILB_OK);
  assert_present(t, B(PREFIX_HIT_RATE) | B(GEN_TOKENS_PER_S));
  assert_sig(t, ILB_SIGNAL_GEN_TOKENS_PER_S, 2000.0 / 20.0);
  assert_sig(t, ILB_SIGNAL_PREFIX_HIT_RATE, 200.0 / 800.0);

  /* A page without the counters forgets them: when they come back they
   * are a new baseline, not a difference over two intervals. */
  assert_rc(parse_str(&t, s, "vllm:num_requests_waiting 1\n", 150 * SEC),
            ILB_OK);
  assert_rc(parse_str(&t, s, after, 160 * SEC), ILB_OK);
  assert_present(t, 0);
  free(pg.p);
  drop(s);
}

static void test_vllm_old_names_rates(void **state) {
  (void)state;
  ilb_scrape *s = mk(ILB_DIALECT_VLLM, NULL, NULL);
  page pg = load("vllm_old.txt");
  ilb_telemetry t;
  assert_rc(parse(&t, s, pg.p, pg.n, 10 * SEC), ILB_OK);
#define QM "{engine=\"0\",model_name=\"Qwen/Qwen2.5-7B-Instruct\"}"
  const char p2[] = "vllm:gpu_prefix_cache_queries_total" QM " 251000.0\n"
                    "vllm:gpu_prefix_cache_hits_total" QM " 100300.0\n"
                    "vllm:generation_tokens_total" QM " 1.2005e+06\n"
                    "vllm:time_to_first_token_seconds_sum" QM " 304.5\n"
                    "vllm:time_to_first_token_seconds_count" QM " 2030.0\n";
#undef QM
  assert_rc(parse_str(&t, s, p2, 15 * SEC), ILB_OK);
  assert_present(t, B(PREFIX_HIT_RATE) | B(GEN_TOKENS_PER_S) | B(TTFT));
  assert_sig(t, ILB_SIGNAL_PREFIX_HIT_RATE, 300.0 / 1000.0);
  assert_sig(t, ILB_SIGNAL_GEN_TOKENS_PER_S, 500.0 / 5.0);
  assert_sig(t, ILB_SIGNAL_TTFT, 4.5 / 30.0);

  /* vLLM 0.9 prints the old and the new names with the same values: the
   * new ones are read, the old ones do not count twice. */
  const char both[] = "vllm:kv_cache_usage_perc 0.5\n"
                      "vllm:gpu_cache_usage_perc 0.7\n"
                      "vllm:prefix_cache_queries_total 1000\n"
                      "vllm:prefix_cache_hits_total 100\n"
                      "vllm:gpu_prefix_cache_queries_total 5000\n"
                      "vllm:gpu_prefix_cache_hits_total 5000\n";
  const char both2[] = "vllm:kv_cache_usage_perc 0.5\n"
                       "vllm:gpu_cache_usage_perc 0.7\n"
                       "vllm:prefix_cache_queries_total 2000\n"
                       "vllm:prefix_cache_hits_total 600\n"
                       "vllm:gpu_prefix_cache_queries_total 6000\n"
                       "vllm:gpu_prefix_cache_hits_total 6000\n";
  assert_rc(parse_str(&t, s, both, 20 * SEC), ILB_OK);
  assert_rc(parse_str(&t, s, both2, 30 * SEC), ILB_OK);
  assert_present(t, B(KV_CACHE_USAGE) | B(PREFIX_HIT_RATE));
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 0.5);
  assert_sig(t, ILB_SIGNAL_PREFIX_HIT_RATE, 500.0 / 1000.0);

  /* v0's gauge, when there are no counters. */
  assert_rc(parse_str(&t, s,
                      "vllm:gpu_prefix_cache_hit_rate{model_name=\"m\"} 0.25\n",
                      40 * SEC),
            ILB_OK);
  assert_present(t, B(PREFIX_HIT_RATE));
  assert_sig(t, ILB_SIGNAL_PREFIX_HIT_RATE, 0.25);

  /* cache_config_info: "None" blocks say nothing; the block size stays. */
  assert_rc(parse_str(&t, s,
                      "vllm:cache_config_info{block_size=\"32\",engine=\"0\","
                      "num_gpu_blocks=\"None\"} 1.0\n",
                      50 * SEC),
            ILB_OK);
  assert_present(t, B(KV_BLOCK_SIZE));
  assert_sig(t, ILB_SIGNAL_KV_BLOCK_SIZE, 32);
  /* A block size of 0 is no block size (the range is >= 1). */
  assert_rc(parse_str(&t, s,
                      "vllm:cache_config_info{block_size=\"0\","
                      "num_gpu_blocks=\"100\"} 1.0\n",
                      60 * SEC),
            ILB_OK);
  assert_present(t, B(KV_BLOCKS_TOTAL));
  free(pg.p);
  drop(s);
}

static void test_sglang_ttft(void **state) {
  (void)state;
  ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
  page pg = load("sglang.txt");
  ilb_telemetry t;
  assert_rc(parse(&t, s, pg.p, pg.n, 10 * SEC), ILB_OK);
  const char p2[] =
      "sglang:time_to_first_token_seconds_sum{model_name=\"Qwen/Qwen3-8B\"} "
      "12314.231201171875\n"
      "sglang:time_to_first_token_seconds_count{model_name=\"Qwen/Qwen3-8B\"}"
      " 11048.0\n";
  assert_rc(parse_str(&t, s, p2, 20 * SEC), ILB_OK);
  assert_present(t, B(TTFT));
  assert_sig(t, ILB_SIGNAL_TTFT, 20.0 / 40.0);
  free(pg.p);
  drop(s);
}

/* triton.txt ten seconds later: llama +100 requests and 50 ms of queueing,
 * mistral +50 requests and 100 ms. */
static const char triton_page2[] =
    "nv_inference_request_success{model=\"llama-3-8b\",version=\"1\"} 12100\n"
    "nv_inference_request_success{model=\"mistral-7b\",version=\"1\"} 8050\n"
    "nv_inference_queue_duration_us{model=\"llama-3-8b\",version=\"1\"} "
    "3650000\n"
    "nv_inference_queue_duration_us{model=\"mistral-7b\",version=\"1\"} "
    "1100000\n";

static void test_triton_rates_and_filter(void **state) {
  (void)state;
  page pg = load("triton.txt");
  ilb_telemetry t;

  ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
  assert_rc(parse(&t, s, pg.p, pg.n, 100 * SEC), ILB_OK);
  assert_rc(parse_str(&t, s, triton_page2, 110 * SEC), ILB_OK);
  assert_present(t, B(QUEUE_TIME) | B(REQUEST_RATE));
  /* (50000 + 100000) us over 150 requests */
  assert_sig(t, ILB_SIGNAL_QUEUE_TIME, 150000e-6 / 150);
  assert_sig(t, ILB_SIGNAL_REQUEST_RATE, 150.0 / 10);
  drop(s);

  /* model = llama-3-8b: its series and the GPU-wide ones. */
  s = mk(ILB_DIALECT_AUTO, NULL, "llama-3-8b");
  assert_rc(parse(&t, s, pg.p, pg.n, 100 * SEC), ILB_OK);
  assert_present(t, B(GPU_UTILIZATION) | B(GPU_MEMORY_TOTAL) |
                        B(GPU_MEMORY_FREE) | B(REQUESTS_RUNNING) |
                        B(REQUESTS_WAITING) | B(MAX_CONCURRENCY) |
                        B(KV_CACHE_USAGE) | B(KV_BLOCKS_TOTAL) |
                        B(KV_BLOCK_SIZE));
  assert_sig(t, ILB_SIGNAL_GPU_UTILIZATION, 0.70);
  assert_sig(t, ILB_SIGNAL_GPU_MEMORY_TOTAL, 171798691840.0);
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 10);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 3);
  assert_sig(t, ILB_SIGNAL_MAX_CONCURRENCY, 64);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 4500.0 / 6000);
  assert_sig(t, ILB_SIGNAL_KV_BLOCKS_TOTAL, 6000);
  assert_sig(t, ILB_SIGNAL_KV_BLOCK_SIZE, 64);
  assert_rc(parse_str(&t, s, triton_page2, 110 * SEC), ILB_OK);
  assert_present(t, B(QUEUE_TIME) | B(REQUEST_RATE));
  assert_sig(t, ILB_SIGNAL_QUEUE_TIME, 50000e-6 / 100);
  assert_sig(t, ILB_SIGNAL_REQUEST_RATE, 100.0 / 10);
  drop(s);

  /* The other model. */
  s = mk(ILB_DIALECT_TRITON, "model", "mistral-7b");
  assert_rc(parse(&t, s, pg.p, pg.n, 100 * SEC), ILB_OK);
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 6);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 0);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 1000.0 / 4000);
  assert_sig(t, ILB_SIGNAL_GPU_UTILIZATION, 0.70);
  drop(s);

  /* A model the server does not have: the GPU-wide series only. */
  s = mk(ILB_DIALECT_AUTO, NULL, "gpt-oss-120b");
  assert_rc(parse(&t, s, pg.p, pg.n, 100 * SEC), ILB_OK);
  assert_present(t, B(GPU_UTILIZATION) | B(GPU_MEMORY_TOTAL) |
                        B(GPU_MEMORY_FREE));
  drop(s);

  /* Newer TensorRT-LLM backends also print the fraction: used when max is
   * not there. */
  s = mk(ILB_DIALECT_TRITON, NULL, NULL);
  assert_rc(parse_str(&t, s,
                      "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="
                      "\"fraction\",model=\"m\",version=\"1\"} 0.375\n",
                      1),
            ILB_OK);
  assert_present(t, B(KV_CACHE_USAGE));
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 0.375);
  drop(s);
  free(pg.p);
}

static void test_vllm_filter(void **state) {
  (void)state;
  /* Two models on one page (a proxy that merges two servers' pages). */
  const char two[] =
      "vllm:num_requests_waiting{engine=\"0\",model_name=\"a\"} 5.0\n"
      "vllm:num_requests_waiting{engine=\"0\",model_name=\"b\"} 7.0\n"
      "vllm:num_requests_running{model_name=\"a\",engine=\"0\"} 1.0\n"
      "vllm:num_requests_running{model_name=\"b\",engine=\"0\"} 2.0\n"
      "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"a\"} 0.25\n"
      "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"b\"} 0.75\n"
      "vllm:num_requests_waiting{engine=\"0\",model_name=\"a\\\"b\"} 100\n"
      "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"1000\"} 1\n";
  ilb_telemetry t;
  ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, "b");
  assert_rc(parse_str(&t, s, two, 1), ILB_OK);
  assert_present(t, B(REQUESTS_WAITING) | B(REQUESTS_RUNNING) |
                        B(KV_CACHE_USAGE) | B(KV_BLOCK_SIZE) |
                        B(KV_BLOCKS_TOTAL));
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 7);
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 2);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 0.75);
  assert_sig(t, ILB_SIGNAL_KV_BLOCKS_TOTAL, 1000); /* no model label */
  drop(s);

  s = mk(ILB_DIALECT_VLLM, "model_name", "a");
  assert_rc(parse_str(&t, s, two, 1), ILB_OK);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 5);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 0.25);
  drop(s);

  /* The escaped value a\"b is the model a"b. */
  s = mk(ILB_DIALECT_VLLM, NULL, "a\"b");
  assert_rc(parse_str(&t, s, two, 1), ILB_OK);
  assert_present(t, B(REQUESTS_WAITING) | B(KV_BLOCK_SIZE) |
                        B(KV_BLOCKS_TOTAL));
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 100);
  drop(s);

  /* No filter: all three models. */
  s = mk(ILB_DIALECT_VLLM, NULL, NULL);
  assert_rc(parse_str(&t, s, two, 1), ILB_OK);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 112);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 0.5);
  drop(s);

  /* Any label can be the key: engine 1 of vllm.txt alone (its
   * cache_config_info has the engine label too). */
  page pg = load("vllm.txt");
  s = mk(ILB_DIALECT_AUTO, "engine", "1");
  assert_rc(parse(&t, s, pg.p, pg.n, 1), ILB_OK);
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 9);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 1);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 0.375);
  assert_sig(t, ILB_SIGNAL_KV_BLOCKS_TOTAL, 27000);
  drop(s);
  /* A key alone (no value) filters nothing. */
  s = mk(ILB_DIALECT_AUTO, "engine", NULL);
  assert_rc(parse(&t, s, pg.p, pg.n, 1), ILB_OK);
  assert_sig(t, ILB_SIGNAL_REQUESTS_RUNNING, 21);
  drop(s);
  free(pg.p);

  /* TGI has no model label: a value alone filters nothing. */
  s = mk(ILB_DIALECT_AUTO, NULL, "whatever");
  assert_rc(parse_str(&t, s, "tgi_queue_size{model_name=\"x\"} 4\n", 1),
            ILB_OK);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 4);
  drop(s);
}

/* ------------------------------------------------------------------------ */
/* Dialects: detection and configuration                                     */
/* ------------------------------------------------------------------------ */

static void test_detect_and_configure(void **state) {
  (void)state;
  ilb_telemetry t;
  int32_t d;
  page pg = load("vllm.txt");

  /* Nothing known yet: AUTO, and a page of other metrics is ENOENT with
   * nothing present (but t filled). */
  ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
  assert_rc(ilb_scrape_dialect(&d, s), ILB_OK);
  assert_int_equal(d, ILB_DIALECT_AUTO);
  assert_rc(parse_str(&t, s, "# HELP x y\nprocess_open_fds 3\n\n", 7),
            ILB_ENOENT);
  assert_int_equal(t.present, 0);
  assert_int_equal(t.timestamp_ns, 7);
  assert_true(t.requests_waiting == 0);
  assert_rc(ilb_scrape_dialect(&d, s), ILB_OK);
  assert_int_equal(d, ILB_DIALECT_AUTO);
  /* HELP / TYPE lines do not decide, the first sample does. */
  assert_rc(parse_str(&t, s,
                      "# TYPE tgi_queue_size gauge\n"
                      "sglang:num_queue_reqs 3\n"
                      "tgi_queue_size 9\n"
                      "vllm:num_requests_waiting 5\n",
                      8),
            ILB_OK);
  assert_rc(ilb_scrape_dialect(&d, s), ILB_OK);
  assert_int_equal(d, ILB_DIALECT_SGLANG);
  assert_present(t, B(REQUESTS_WAITING));
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 3);
  /* and it stays */
  assert_rc(parse(&t, s, pg.p, pg.n, 9), ILB_ENOENT);
  assert_rc(ilb_scrape_dialect(&d, s), ILB_OK);
  assert_int_equal(d, ILB_DIALECT_SGLANG);
  drop(s);

  /* Configured: other names are ignored, and it is reported as is. */
  s = mk(ILB_DIALECT_TGI, NULL, NULL);
  assert_rc(ilb_scrape_dialect(&d, s), ILB_OK);
  assert_int_equal(d, ILB_DIALECT_TGI);
  assert_rc(parse(&t, s, pg.p, pg.n, 9), ILB_ENOENT);
  assert_int_equal(t.present, 0);
  assert_rc(parse_str(&t, s,
                      "vllm:num_requests_waiting 5\ntgi_queue_size 2\n"
                      "nv_gpu_utilization 0.5\n",
                      10),
            ILB_OK);
  assert_present(t, B(REQUESTS_WAITING));
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 2);
  drop(s);

  /* llama.cpp: kv_cache_usage only from an older build's
   * kv_cache_usage_ratio gauge; a current build's page has none. */
  s = mk(ILB_DIALECT_LLAMACPP, NULL, NULL);
  assert_rc(parse_str(&t, s,
                      "llamacpp:kv_cache_usage_ratio 0.5\n"
                      "llamacpp:requests_processing 1\n",
                      1),
            ILB_OK);
  assert_present(t, B(REQUESTS_RUNNING) | B(KV_CACHE_USAGE));
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 0.5);
  assert_rc(parse_str(&t, s, "llamacpp:requests_processing 1\n", 1), ILB_OK);
  assert_present(t, B(REQUESTS_RUNNING));
  drop(s);
  free(pg.p);
}

/* ------------------------------------------------------------------------ */
/* Values: clamping, NaN, infinities, huge and long numbers                  */
/* ------------------------------------------------------------------------ */

static void test_values_clamped(void **state) {
  (void)state;
  ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
  ilb_telemetry t;
  char digits[512];
  memset(digits, '9', 400);
  memcpy(digits + 400, "\n", 2);
  char line[600];

  struct {
    const char *text;
    int sig;
    double want; /* < -1: absent */
  } cases[] = {
      {"tgi_queue_size 1e309\n", ILB_SIGNAL_REQUESTS_WAITING, ILB_SIGNAL_MAX},
      {"tgi_queue_size +Inf\n", ILB_SIGNAL_REQUESTS_WAITING, ILB_SIGNAL_MAX},
      {"tgi_queue_size 1e999999999\n", ILB_SIGNAL_REQUESTS_WAITING,
       ILB_SIGNAL_MAX},
      {"tgi_queue_size 1e-999999999\n", ILB_SIGNAL_REQUESTS_WAITING, 0},
      {"tgi_queue_size -Inf\n", ILB_SIGNAL_REQUESTS_WAITING, 0},
      {"tgi_queue_size -3\n", ILB_SIGNAL_REQUESTS_WAITING, 0},
      {"tgi_queue_size NaN\n", ILB_SIGNAL_REQUESTS_WAITING, -2},
      {"tgi_queue_size 7 1700000000000\n", ILB_SIGNAL_REQUESTS_WAITING, 7},
      {"tgi_queue_size 2e18\n", ILB_SIGNAL_REQUESTS_WAITING, ILB_SIGNAL_MAX},
      {"tgi_queue_size 1e18\n", ILB_SIGNAL_REQUESTS_WAITING, 1e18},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_rc(parse_str(&t, s, cases[i].text, 1), ILB_OK);
    if (cases[i].want < -1) {
      assert_present(t, 0);
    } else {
      assert_present(t, ILB_SIGNAL_BIT(cases[i].sig));
      assert_sig(t, cases[i].sig, cases[i].want);
    }
  }
  snprintf(line, sizeof line, "tgi_queue_size %s", digits);
  assert_rc(parse_str(&t, s, line, 1), ILB_OK);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, ILB_SIGNAL_MAX);
  snprintf(line, sizeof line, "tgi_queue_size 0.%s", digits);
  assert_rc(parse_str(&t, s, line, 1), ILB_OK);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 1.0);
  drop(s);

  /* Fractions clamp to 0..1; a NaN in one series hides the signal. */
  s = mk(ILB_DIALECT_VLLM, NULL, NULL);
  assert_rc(parse_str(&t, s, "vllm:kv_cache_usage_perc 1.0001\n", 1), ILB_OK);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 1);
  assert_rc(parse_str(&t, s, "vllm:kv_cache_usage_perc -0.1\n", 1), ILB_OK);
  assert_sig(t, ILB_SIGNAL_KV_CACHE_USAGE, 0);
  assert_rc(parse_str(&t, s,
                      "vllm:kv_cache_usage_perc{engine=\"0\"} 0.5\n"
                      "vllm:kv_cache_usage_perc{engine=\"1\"} NaN\n"
                      "vllm:num_requests_running 1\n",
                      1),
            ILB_OK);
  assert_present(t, B(REQUESTS_RUNNING));
  /* A counter at +Inf gives no rate (Inf - Inf), and nothing breaks. */
  assert_rc(parse_str(&t, s, "vllm:generation_tokens_total +Inf\n", 1 * SEC),
            ILB_OK);
  assert_rc(parse_str(&t, s, "vllm:generation_tokens_total +Inf\n", 2 * SEC),
            ILB_OK);
  assert_present(t, 0);
  drop(s);

  /* Used memory above total: free is 0, never negative. */
  s = mk(ILB_DIALECT_TRITON, NULL, NULL);
  assert_rc(parse_str(&t, s,
                      "nv_gpu_memory_total_bytes{gpu_uuid=\"a\"} 100\n"
                      "nv_gpu_memory_used_bytes{gpu_uuid=\"a\"} 150\n"
                      "nv_gpu_utilization{gpu_uuid=\"a\"} 1.5\n",
                      1),
            ILB_OK);
  assert_sig(t, ILB_SIGNAL_GPU_MEMORY_TOTAL, 100);
  assert_sig(t, ILB_SIGNAL_GPU_MEMORY_FREE, 0);
  assert_sig(t, ILB_SIGNAL_GPU_UTILIZATION, 1);
  drop(s);
}

/* ulps between two finite doubles of the same sign */
static uint64_t ulps(double a, double b) {
  int64_t ia, ib;
  memcpy(&ia, &a, 8);
  memcpy(&ib, &b, 8);
  return ia > ib ? (uint64_t)(ia - ib) : (uint64_t)(ib - ia);
}

static uint64_t rng_state;
static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static double num(const char *text) {
  double v = -12345;
  if (ilb__parse_number(text, strlen(text), &v))
    fail_msg("\"%s\" rejected", text);
  return v;
}

static void test_number_reader(void **state) {
  (void)state;
  double v;
  assert_true(num("0") == 0);
  assert_true(num("-0") == 0);
  assert_true(num("1") == 1);
  assert_true(num("0.5") == 0.5);
  assert_true(num(".5") == 0.5);
  assert_true(num("1.") == 1);
  assert_true(num("+2.25") == 2.25);
  assert_true(num("1e3") == 1000);
  assert_true(num("1E+03") == 1000);
  assert_true(num("12.5e-1") == 1.25);
  assert_true(num("007") == 7);
  assert_true(num("8.128902e+06") == 8128902);
  assert_true(num("0.1") == 0.1);
  assert_true(num("2.3518979474117756e+06") == 2.3518979474117756e+06);
  assert_true(num("1e22") == 1e22);
  assert_true(num("1e308") == 1e308);
  assert_true(num("1.7976931348623157e308") == 1.7976931348623157e308);
  assert_true(num("1e309") > 1.7976931348623157e308);   /* +Inf */
  assert_true(num("1e999999999") > 1.7976931348623157e308);
  assert_true(num("-1e999999999") < -1.7976931348623157e308);
  assert_true(num("1e-999999999") == 0);
  assert_true(num("1e-400") == 0);
  assert_true(num("4.9406564584124654e-324") > 0); /* least subnormal */
  assert_true(num("+Inf") > 1.7976931348623157e308);
  assert_true(num("inf") > 1.7976931348623157e308);
  assert_true(num("Infinity") > 1.7976931348623157e308);
  assert_true(num("-Inf") < -1.7976931348623157e308);
  v = num("NaN");
  assert_true(v != v);
  v = num("nan");
  assert_true(v != v);
  const char *bad[] = {"",     "+",    "-",   ".",    "e5",   "1e",  "1e+",
                       "1.2.3", "0x10", "1,5", "+NaN", "-nan", "In",  "Infin",
                       "1 ",   " 1",   "1_0", "--1",  "1e5.0", "NaNa", "∞"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (!ilb__parse_number(bad[i], strlen(bad[i]), &v))
      fail_msg("\"%s\" accepted as %g", bad[i], v);
  /* Never reads past n: "12" of "123" is 12. */
  assert_int_equal(ilb__parse_number("123", 2, &v), 0);
  assert_true(v == 12);

  /* 400 digits, and a long fraction: as strtod (C locale) within 1 ulp. */
  char big[512];
  memset(big, '7', 400);
  big[400] = 0;
  v = num(big);
  assert_true(ulps(v, strtod(big, NULL)) <= 1);
  big[0] = '0';
  big[1] = '.';
  v = num(big);
  assert_true(ulps(v, strtod(big, NULL)) <= 1);

  /* Random decimal strings against strtod (the C locale's, correctly
   * rounded): correctly rounded for up to 19 digits from 1e-290 up, at
   * most one ulp off otherwise (digits past the 19th are dropped; tiny
   * values lose bits to the subnormal range). */
  rng_state = 42;
  uint64_t worst = 0, inexact = 0;
  for (int i = 0; i < 200000; i++) {
    char b[64];
    int nd = 1 + (int)(rnd() % 22), point = (int)(rnd() % (nd + 1));
    int e = (int)(rnd() % 640) - 320, k = 0;
    if (rnd() & 1)
      b[k++] = '-';
    for (int j = 0; j < nd; j++) {
      if (j == point)
        b[k++] = '.';
      b[k++] = (char)('0' + rnd() % 10);
    }
    k += snprintf(b + k, sizeof b - k, "e%d", e);
    double want = strtod(b, NULL), got = num(b);
    if (want == 0 || got == 0 || want > 1.7976931348623157e308 ||
        want < -1.7976931348623157e308) {
      if (got != want)
        fail_msg("%s: %.17g, strtod %.17g", b, got, want);
      continue;
    }
    uint64_t u = ulps(got, want);
    if (u > worst)
      worst = u;
    inexact += u != 0;
    int exact = nd <= 19 && fabs_d(want) >= 1e-290;
    if (u > 1 || (exact && u))
      fail_msg("%s: %.17g, strtod %.17g (%llu ulp)", b, got, want,
               (unsigned long long)u);
  }
  print_message("number reader: worst %llu ulp over 200000 strings, %llu "
                "not correctly rounded\n",
                (unsigned long long)worst, (unsigned long long)inexact);
}

/* Independent of LC_NUMERIC: the library imports no strtod, sscanf or
 * setlocale (suite abi, abi_no_locale_imports); number.c reads decimals
 * itself, checked above against exact values. */

/* ------------------------------------------------------------------------ */
/* Syntax                                                                    */
/* ------------------------------------------------------------------------ */

static void test_syntax_accepted(void **state) {
  (void)state;
  /* Each is valid and sets requests_waiting (TGI) to 4. */
  const char *ok[] = {
      "tgi_queue_size 4\n",
      "tgi_queue_size 4",                          /* no final newline */
      "tgi_queue_size\t4\n",
      "   tgi_queue_size 4  \n",                    /* leading/trailing blanks */
      "tgi_queue_size{} 4\n",
      "tgi_queue_size{a=\"b\",} 4\n",               /* trailing comma */
      "tgi_queue_size { a = \"b\" , c=\"\" , } 4\n", /* blanks everywhere */
      "tgi_queue_size{a=\"b\"}4\n",                 /* no blank after } */
      "tgi_queue_size{a=\"x\\\\\\\"y\\n{}=,\"} 4\n", /* escapes, specials */
      "tgi_queue_size{a=\"\\\"\"} 4\n",
      "tgi_queue_size{a=\"caf\xc3\xa9 \t \x01\r\"} 4\n", /* any byte but NUL */
      "tgi_queue_size 4 1700000000000\n",           /* timestamp ms */
      "tgi_queue_size 4 1700000000.125\n",          /* OpenMetrics seconds */
      "tgi_queue_size 4 -5\t\n",
      "tgi_queue_size 4.0e0\n",
      "tgi_queue_size 4\r\n",                       /* CRLF */
      "\n\n  \t\n\r\ntgi_queue_size 4\n\n",        /* blank lines */
      "# HELP tgi_queue_size Current queue size\n"
      "# TYPE tgi_queue_size gauge\ntgi_queue_size 4\n",
      "#HELP tgi_queue_size\n#TYPE x COUNTER\n# TYPE y\n#\n# HELP\n"
      "# any comment { \" \\q\n"
      "# HELP tgi_queue_size text \\q is not checked\n"
      "# TYPE z untyped\n# TYPE z summary\n# TYPE z histogram\n"
      "# TYPE z info\n# TYPE z stateset\n# TYPE z gaugehistogram\n"
      "# TYPE z unknown\ntgi_queue_size 4\n",
      ":odd:name_ 1\n_x 2\ntgi_queue_size 4\n",
      "tgi_queue_size 4\n# EOF\n",
      "tgi_queue_size 4\n# EOF",
      "tgi_queue_size 4\n#   EOF  \nthis is { not \" parsed \\q\n",
      "tgi_queue_size 4\n# EOF\n\0\0\0",
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
    ilb_telemetry t;
    size_t n = strlen(ok[i]);
    if (i == sizeof ok / sizeof ok[0] - 1)
      n += 3; /* the NULs after # EOF */
    int rc = parse(&t, s, ok[i], n, 1);
    if (rc != ILB_OK) {
      uint64_t line = 0;
      const char *what = "";
      ilb_scrape_error(&line, &what, s);
      fail_msg("case %zu: %s (line %llu: %s)", i, ilb_err_name(rc),
               (unsigned long long)line, what);
    }
    assert_present(t, B(REQUESTS_WAITING));
    assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 4);
    drop(s);
  }
}

static void test_syntax_errors(void **state) {
  (void)state;
  struct {
    const char *text;
    size_t len; /* 0: strlen */
    uint64_t line;
    const char *what;
  } cases[] = {
      {"a 1\nb{x=\"\\q\"} 1\n", 0, 2, "bad escape in label value"},
      {"b{x=\"\\t\"} 1\n", 0, 1, "bad escape in label value"},
      {"b{x=\"ok\",y=\"\\\"\\x\"} 1\n", 0, 1, "bad escape in label value"},
      {"a{x=\"abc} 1\n", 0, 1, "unterminated label value"},
      {"a{x=\"abc\\\"} 1\n", 0, 1, "unterminated label value"},
      {"a{x=\"abc\\", 0, 1, "unterminated label value"},
      {"foo\n", 0, 1, "missing value"},
      {"foo   \n", 0, 1, "missing value"},
      {"foo{a=\"b\"}\n", 0, 1, "missing value"},
      {"foo{a=\"b\"}  \r\n", 0, 1, "missing value"},
      {"9foo 1\n", 0, 1, "bad metric name"},
      {"foo-bar 1\n", 0, 1, "bad metric name"},
      {"{a=\"b\"} 1\n", 0, 1, "bad metric name"},
      {"foo\"x 1\n", 0, 1, "bad metric name"},
      {"foo{9a=\"b\"} 1\n", 0, 1, "bad label name"},
      {"foo{a:b=\"c\"} 1\n", 0, 1, "expected '=' after label name"},
      {"foo{a \"b\"} 1\n", 0, 1, "expected '=' after label name"},
      {"foo{a=b} 1\n", 0, 1, "expected '\"' before label value"},
      {"foo{a=\"b\" c=\"d\"} 1\n", 0, 1,
       "expected ',' or '}' after label value"},
      {"foo{a=\"b\",,} 1\n", 0, 1, "bad label name"},
      {"foo{a=\"b\"", 0, 1, "expected ',' or '}' after label value"},
      {"foo{a=\"b\",\n", 0, 1, "unterminated label set"},
      {"foo{\n", 0, 1, "unterminated label set"},
      {"foo 1.2.3\n", 0, 1, "bad value"},
      {"foo 0x10\n", 0, 1, "bad value"},
      {"foo +NaN\n", 0, 1, "bad value"},
      {"foo 1e\n", 0, 1, "bad value"},
      {"foo abc\n", 0, 1, "bad value"},
      {"foo 1,5\n", 0, 1, "bad value"},
      {"foo 1\r2\n", 0, 1, "bad value"},
      {"foo 1 12a\n", 0, 1, "bad timestamp"},
      {"foo 1 123 456\n", 0, 1, "unexpected text after timestamp"},
      {"ok 1\nfoo\0 1\n", 12, 2, "NUL byte"},
      {"ok 1\n# comment \0\n", 18, 2, "NUL byte"},
      {"ok 1\nok{a=\"\0\"} 1\n", 17, 2, "NUL byte"},
      {"# TYPE 9x counter\n", 0, 1, "bad metric name in comment"},
      {"# HELP foo{ text\n", 0, 1, "bad metric name in comment"},
      {"# TYPE foo bar\n", 0, 1, "unknown metric type"},
      {"# TYPE foo counter extra\n", 0, 1, "unknown metric type"},
      {"# EOF extra\n{\n", 0, 2, "bad metric name"},
      {"\n# c\n\n  \t\nfoo{\n", 0, 5, "unterminated label set"},
      {"a 1\r\nb 2\r\nc 3\r\n\r\nd{\r\n", 0, 5, "unterminated label set"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = cases[i].len ? cases[i].len : strlen(cases[i].text);
    /* One piece, then byte by byte: the same line and message. */
    for (int split = 0; split < 2; split++) {
      ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
      ilb_telemetry t = poisoned();
      int rc = 0;
      if (!split) {
        rc = feed_exact(s, cases[i].text, n);
      } else {
        for (size_t k = 0; k < n && rc == ILB_OK; k++)
          rc = feed_exact(s, cases[i].text + k, 1);
      }
      int frc = ilb_scrape_finish(&t, s, 1);
      if (frc != ILB_EPARSE)
        fail_msg("case %zu (split %d): finish gave %s", i, split,
                 ilb_err_name(frc));
      if (rc != ILB_OK && rc != ILB_EPARSE)
        fail_msg("case %zu: feed gave %s", i, ilb_err_name(rc));
      /* t untouched */
      ilb_telemetry p = poisoned();
      assert_memory_equal(&t, &p, sizeof t);
      uint64_t line = 0;
      const char *what = NULL;
      assert_rc(ilb_scrape_error(&line, &what, s), ILB_OK);
      if (line != cases[i].line || strcmp(what, cases[i].what))
        fail_msg("case %zu (split %d): line %llu \"%s\", expected %llu "
                 "\"%s\"",
                 i, split, (unsigned long long)line, what,
                 (unsigned long long)cases[i].line, cases[i].what);
      drop(s);
    }
  }
}

/* After a malformed page: feed keeps failing until finish, finish drops
 * the page without touching *t and keeps the previous page's counters, the
 * error stays readable, and the next page parses. */
static void test_error_recovery(void **state) {
  (void)state;
  ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
  page pg = load("vllm.txt");
  ilb_telemetry t;
  assert_rc(parse(&t, s, pg.p, pg.n, 100 * SEC), ILB_OK);

  /* A page that starts like page 2 and breaks on line 3. */
  const char *two_lines = strchr(strchr(vllm_page2, '\n') + 1, '\n') + 1;
  assert_rc(ilb_scrape_feed(s, vllm_page2, (size_t)(two_lines - vllm_page2)),
            ILB_OK);
  assert_rc(ilb_scrape_feed(s, "foo{a=\"\\z\"} 1\n", 14), ILB_EPARSE);
  assert_rc(ilb_scrape_feed(s, "tgi_queue_size 1\n", 17), ILB_EPARSE);
  assert_error(s, 3, "bad escape in label value");
  t = poisoned();
  assert_rc(ilb_scrape_finish(&t, s, 105 * SEC), ILB_EPARSE);
  ilb_telemetry p = poisoned();
  assert_memory_equal(&t, &p, sizeof t);
  assert_error(s, 3, "bad escape in label value");

  /* Rates of the next page are against vllm.txt, over 10 s. */
  assert_rc(parse_str(&t, s, vllm_page2, 110 * SEC), ILB_OK);
  assert_sig(t, ILB_SIGNAL_GEN_TOKENS_PER_S, 3000.0 / 10.0);
  assert_sig(t, ILB_SIGNAL_PREFIX_HIT_RATE, 0.6);
  /* The last error is still the one reported. */
  assert_error(s, 3, "bad escape in label value");

  /* An error on the last line, only seen at finish (no newline). */
  assert_rc(ilb_scrape_feed(s, "a 1\nb 2\nc 3\nd{", 14), ILB_OK);
  assert_rc(ilb_scrape_finish(&t, s, 120 * SEC), ILB_EPARSE);
  assert_error(s, 4, "unterminated label set");
  /* Line numbers start again at 1 on the next page. */
  assert_rc(parse_str(&t, s, "x 1\ny{\n", 130 * SEC), ILB_EPARSE);
  assert_error(s, 2, "unterminated label set");
  free(pg.p);
  drop(s);
}

static void test_line_max(void **state) {
  (void)state;
  char text[1024];
  ilb_telemetry t;
  /* A line of exactly line_max bytes (without its '\n') is fine. */
  memset(text, ' ', sizeof text);
  memcpy(text, "tgi_queue_size 4", 16);
  text[256] = '\n';
  ilb_scrape *s = mk_line_max(256);
  assert_rc(parse(&t, s, text, 257, 1), ILB_OK);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 4);
  /* also fed byte by byte, and as the last line without '\n' */
  for (size_t k = 0; k < 257; k++)
    assert_rc(feed_exact(s, text + k, 1), ILB_OK);
  assert_rc(ilb_scrape_finish(&t, s, 1), ILB_OK);
  assert_rc(parse(&t, s, text, 256, 1), ILB_OK);
  assert_sig(t, ILB_SIGNAL_REQUESTS_WAITING, 4);

  /* One more byte is too long: in one piece, byte by byte, at the end. */
  memcpy(text, "a 1\nb 2\n", 8);
  memset(text + 8, ' ', 300);
  memcpy(text + 8, "tgi_queue_size 4", 16);
  text[8 + 257] = '\n';
  assert_rc(parse(&t, s, text, 8 + 258, 1), ILB_EPARSE);
  assert_error(s, 3, "line too long");
  int rc = 0;
  for (size_t k = 0; k < 8 + 258 && rc == ILB_OK; k++)
    rc = feed_exact(s, text + k, 1);
  assert_rc(rc, ILB_EPARSE);
  assert_rc(ilb_scrape_finish(&t, s, 1), ILB_EPARSE);
  assert_error(s, 3, "line too long");
  assert_rc(parse(&t, s, text, 8 + 257, 1), ILB_EPARSE); /* no '\n' */
  assert_error(s, 3, "line too long");
  /* CR counts: 256 bytes + "\r\n" is 257 before the '\n'. */
  memset(text, ' ', 300);
  memcpy(text, "tgi_queue_size 4", 16);
  memcpy(text + 256, "\r\n", 2);
  assert_rc(parse(&t, s, text, 258, 1), ILB_EPARSE);
  assert_error(s, 1, "line too long");
  drop(s);

  /* A 1 MB line against the default 64 KiB, in 4 KiB pieces. */
  s = mk(ILB_DIALECT_AUTO, NULL, NULL);
  char *huge = malloc(1 << 20);
  assert_non_null(huge);
  memset(huge, 'x', 1 << 20);
  rc = 0;
  size_t k = 0;
  for (; k < (1u << 20) && rc == ILB_OK; k += 4096)
    rc = feed_exact(s, huge + k, 4096);
  assert_rc(rc, ILB_EPARSE);
  assert_true(k <= 65536 + 4096); /* failed as soon as it could tell */
  assert_rc(ilb_scrape_finish(&t, s, 1), ILB_EPARSE);
  assert_error(s, 1, "line too long");
  free(huge);
  drop(s);
}

static uint64_t fake_now;
static uint64_t fake_clock(void *user_data) {
  (void)user_data;
  return fake_now;
}

/* timestamp_ns 0: the host's clock for the rates; the record keeps 0 (the
 * pool that gets the report stamps it with its own clock). */
static void test_host_clock(void **state) {
  (void)state;
  ilb_host h;
  ilb_host_init(&h);
  h.clock_ns = fake_clock;
  ilb_scrape *s;
  assert_rc(ilb_scrape_new(&s, NULL, &h), ILB_OK);
  track(s);
  ilb_telemetry t;
  fake_now = 50 * SEC;
  assert_rc(parse_str(&t, s, "vllm:generation_tokens_total 100\n", 0),
            ILB_OK);
  assert_int_equal(t.timestamp_ns, 0);
  fake_now = 54 * SEC;
  assert_rc(parse_str(&t, s, "vllm:generation_tokens_total 500\n", 0),
            ILB_OK);
  assert_int_equal(t.timestamp_ns, 0);
  assert_sig(t, ILB_SIGNAL_GEN_TOKENS_PER_S, 400.0 / 4);
  /* an explicit timestamp wins */
  assert_rc(parse_str(&t, s, "vllm:generation_tokens_total 900\n", 58 * SEC),
            ILB_OK);
  assert_int_equal(t.timestamp_ns, 58 * SEC);
  assert_sig(t, ILB_SIGNAL_GEN_TOKENS_PER_S, 100);
  drop(s);
}

/* ilb_telemetry_parse: feed + finish in one call, the same record; after a
 * malformed page the scrape is ready for the next one. */
static void test_telemetry_parse_one_call(void **state) {
  (void)state;
  page pg = load("vllm.txt");
  ilb_scrape *a = mk(ILB_DIALECT_AUTO, NULL, NULL);
  ilb_scrape *b = mk(ILB_DIALECT_AUTO, NULL, NULL);
  ilb_telemetry ta, tb;
  for (uint64_t k = 1; k <= 2; k++) {
    assert_rc(parse(&ta, a, pg.p, pg.n, k * SEC), ILB_OK);
    tb = poisoned();
    assert_rc(ilb_telemetry_parse(&tb, b, pg.p, pg.n, k * SEC), ILB_OK);
    assert_memory_equal(&ta, &tb, sizeof ta);
  }
  tb = poisoned();
  assert_rc(ilb_telemetry_parse(&tb, b, "vllm:num_requests_waiting{\n", 27,
                                3 * SEC),
            ILB_EPARSE);
  uint64_t line = 0;
  assert_rc(ilb_scrape_error(&line, NULL, b), ILB_OK);
  assert_int_equal(line, 1);
  assert_rc(ilb_telemetry_parse(&tb, b, "vllm:num_requests_waiting 3\n", 28,
                                4 * SEC),
            ILB_OK);
  assert_sig(tb, ILB_SIGNAL_REQUESTS_WAITING, 3);
  assert_rc(ilb_telemetry_parse(NULL, b, "", 0, 0), ILB_EINVAL);
  assert_rc(ilb_telemetry_parse(&tb, NULL, "", 0, 0), ILB_EINVAL);
  assert_rc(ilb_telemetry_parse(&tb, b, NULL, 1, 0), ILB_EINVAL);
  drop(a);
  drop(b);
  free(pg.p);
}

/* ------------------------------------------------------------------------ */
/* Streaming                                                                 */
/* ------------------------------------------------------------------------ */

/* The reference: the page twice (so counters give rates), in one piece. */
static ilb_telemetry reference(ilb_scrape *s, const page *pg) {
  ilb_telemetry t;
  assert_rc(parse(&t, s, pg->p, pg->n, 1 * SEC), ILB_OK);
  assert_rc(parse(&t, s, pg->p, pg->n, 2 * SEC), ILB_OK);
  assert_true(t.present != 0);
  return t;
}

static void test_every_split(void **state) {
  (void)state;
  for (size_t f = 0; f < N_FIXTURES; f++) {
    ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
    page pg = load(fixtures[f]);
    ilb_telemetry want = reference(s, &pg), t;
    for (size_t k = 0; k <= pg.n; k++) {
      assert_rc(parse(&t, s, pg.p, pg.n, 1 * SEC), ILB_OK);
      assert_rc(feed_exact(s, pg.p, k), ILB_OK);
      assert_rc(feed_exact(s, pg.p + k, pg.n - k), ILB_OK);
      assert_rc(ilb_scrape_finish(&t, s, 2 * SEC), ILB_OK);
      if (memcmp(&t, &want, sizeof t))
        fail_msg("%s split at %zu: different result", fixtures[f], k);
    }
    /* byte by byte */
    assert_rc(parse(&t, s, pg.p, pg.n, 1 * SEC), ILB_OK);
    for (size_t k = 0; k < pg.n; k++)
      assert_rc(feed_exact(s, pg.p + k, 1), ILB_OK);
    assert_rc(ilb_scrape_finish(&t, s, 2 * SEC), ILB_OK);
    assert_memory_equal(&t, &want, sizeof t);
    /* random pieces, some empty */
    rng_state = f + 1;
    assert_rc(parse(&t, s, pg.p, pg.n, 1 * SEC), ILB_OK);
    for (size_t k = 0; k < pg.n;) {
      size_t len = rnd() % 300;
      if (len > pg.n - k)
        len = pg.n - k;
      assert_rc(feed_exact(s, pg.p + k, len), ILB_OK);
      k += len;
    }
    assert_rc(ilb_scrape_finish(&t, s, 2 * SEC), ILB_OK);
    assert_memory_equal(&t, &want, sizeof t);
    free(pg.p);
    drop(s);
  }
}

/* The fixtures with CRLF line endings read the same. */
static void test_crlf(void **state) {
  (void)state;
  for (size_t f = 0; f < N_FIXTURES; f++) {
    ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
    page pg = load(fixtures[f]);
    ilb_telemetry want = reference(s, &pg), t;
    char *crlf = malloc(2 * pg.n);
    assert_non_null(crlf);
    size_t n = 0;
    for (size_t k = 0; k < pg.n; k++) {
      if (pg.p[k] == '\n')
        crlf[n++] = '\r';
      crlf[n++] = pg.p[k];
    }
    assert_rc(parse(&t, s, crlf, n, 1 * SEC), ILB_OK);
    assert_rc(parse(&t, s, crlf, n, 2 * SEC), ILB_OK);
    assert_memory_equal(&t, &want, sizeof t);
    free(crlf);
    free(pg.p);
    drop(s);
  }
}

/* ------------------------------------------------------------------------ */
/* Fuzz-style                                                                */
/* ------------------------------------------------------------------------ */

static void check_outcome(int rc, const ilb_telemetry *t, ilb_pool *pool,
                          const char *what, size_t k) {
  if (rc == ILB_EPARSE)
    return;
  if (rc != ILB_OK && rc != ILB_ENOENT)
    fail_msg("%s at %zu: %s", what, k, ilb_err_name(rc));
  if (rc == ILB_OK)
    CHECK_RC(ILB_OK, ilb_replica_report(pool, "r", t));
}

static void test_truncated_and_mutated(void **state) {
  (void)state;
  ilb_pool *pool;
  assert_rc(ilb_pool_new(&pool, NULL), ILB_OK);
  track_pool(pool);
  add_replica(pool, "r", 1, 0, NULL);
  for (size_t f = 0; f < N_FIXTURES; f++) {
    ilb_scrape *s = mk(ILB_DIALECT_AUTO, NULL, NULL);
    page pg = load(fixtures[f]);
    char *buf = malloc(pg.n);
    assert_non_null(buf);
    ilb_telemetry t;
    size_t errors = 0;
    /* Every prefix: the last line cut at every byte. */
    for (size_t k = 0; k <= pg.n; k++) {
      int rc = ilb_scrape_feed(s, k ? pg.p : NULL, k);
      t = poisoned();
      int frc = ilb_scrape_finish(&t, s, 1);
      if (rc == ILB_EPARSE && frc != ILB_EPARSE)
        fail_msg("prefix %zu: feed failed, finish %s", k, ilb_err_name(frc));
      errors += frc == ILB_EPARSE;
      check_outcome(frc, &t, pool, "prefix", k);
    }
    /* Cuts inside a label value or a name must fail: some do. */
    assert_true(errors > 0);
    /* Every one-byte deletion, and every byte replaced by a quote, a
     * backslash, a brace or a NUL. */
    const char subst[] = {'"', '\\', '{', '\0'};
    for (size_t k = 0; k < pg.n; k++) {
      memcpy(buf, pg.p, k);
      memcpy(buf + k, pg.p + k + 1, pg.n - k - 1);
      check_outcome(parse(&t, s, buf, pg.n - 1, 1), &t, pool, "deletion", k);
      memcpy(buf, pg.p, pg.n);
      buf[k] = subst[k % 4];
      int rc = parse(&t, s, buf, pg.n, 1);
      if (buf[k] == '\0')
        assert_rc(rc, ILB_EPARSE);
      check_outcome(rc, &t, pool, "substitution", k);
    }
    free(buf);
    free(pg.p);
    drop(s);
  }
  free_pool(pool);
}

static size_t count_nl(const char *p, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    c += p[i] == '\n';
  return c;
}

static void test_garbage(void **state) {
  (void)state;
  const size_t N = 1 << 20;
  char *g = malloc(N);
  assert_non_null(g);
  ilb_telemetry t;
  /* Three kinds of garbage: raw bytes; printable text with short lines;
   * the parser's own tokens shuffled (deep into its paths). */
  static const char *const tokens[] = {
      "vllm:num_requests_waiting", "tgi_queue_size", "nv_gpu_utilization",
      "{", "}", "=", "\"", ",", " ", "\t", "\n", "\r\n", "#", " HELP ",
      " TYPE ", "gauge", "model_name", "\\\"", "\\\\", "\\n", "1", "0.5",
      "-Inf", "NaN", "e", "1e309", "# EOF", "le=\"+Inf\"", "a", "_"};
  for (int kind = 0; kind < 3; kind++) {
    rng_state = UINT64_C(0x5eed) + (uint64_t)kind;
    size_t n = 0;
    while (n < N) {
      if (kind == 0) {
        g[n++] = (char)(rnd() & 0xff);
      } else if (kind == 1) {
        uint64_t r = rnd() % 64;
        g[n++] = r == 0 ? '\n' : (char)(' ' + rnd() % 95);
      } else {
        const char *tok = tokens[rnd() % (sizeof tokens / sizeof *tokens)];
        size_t l = strlen(tok);
        if (l > N - n)
          l = N - n;
        memcpy(g + n, tok, l);
        n += l;
      }
    }
    /* One piece. */
    ilb_scrape *s1 = mk(ILB_DIALECT_AUTO, NULL, NULL);
    int rc1 = parse(&t, s1, g, N, 1);
    ilb_telemetry t1 = t;
    uint64_t line1 = 0;
    const char *what1 = NULL;
    if (kind < 2) {
      assert_rc(rc1, ILB_EPARSE);
      assert_rc(ilb_scrape_error(&line1, &what1, s1), ILB_OK);
      /* a line that exists, and near the start: garbage fails early */
      assert_true(line1 >= 1 && line1 <= count_nl(g, N) + 1);
      print_message("garbage kind %d: line %llu: %s\n", kind,
                    (unsigned long long)line1, what1);
    } else if (rc1 == ILB_EPARSE) {
      assert_rc(ilb_scrape_error(&line1, &what1, s1), ILB_OK);
    }
    /* Random-sized pieces: the same outcome. */
    ilb_scrape *s2 = mk(ILB_DIALECT_AUTO, NULL, NULL);
    int rc = ILB_OK;
    for (size_t k = 0; k < N && rc == ILB_OK;) {
      size_t len = 1 + rnd() % 8192;
      if (len > N - k)
        len = N - k;
      rc = feed_exact(s2, g + k, len);
      k += len;
    }
    t = poisoned();
    int rc2 = ilb_scrape_finish(&t, s2, 1);
    assert_rc(rc2, rc1);
    if (rc1 == ILB_EPARSE) {
      assert_error(s2, line1, what1);
    } else {
      assert_memory_equal(&t, &t1, sizeof t);
    }
    drop(s1);
    drop(s2);
  }
  free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names_and_config),
      cmocka_unit_test(test_new_errors),
      cmocka_unit_test(test_null_args),
      cmocka_unit_test(test_allocation),
      cmocka_unit_test(test_fixture_vllm),
      cmocka_unit_test(test_fixture_vllm_old),
      cmocka_unit_test(test_fixture_sglang),
      cmocka_unit_test(test_fixture_llamacpp),
      cmocka_unit_test(test_fixture_triton),
      cmocka_unit_test(test_fixture_tgi),
      cmocka_unit_test(test_fixtures_reportable),
      cmocka_unit_test(test_vllm_rates),
      cmocka_unit_test(test_vllm_old_names_rates),
      cmocka_unit_test(test_sglang_ttft),
      cmocka_unit_test(test_triton_rates_and_filter),
      cmocka_unit_test(test_vllm_filter),
      cmocka_unit_test(test_detect_and_configure),
      cmocka_unit_test(test_values_clamped),
      cmocka_unit_test(test_number_reader),
      cmocka_unit_test(test_syntax_accepted),
      cmocka_unit_test(test_syntax_errors),
      cmocka_unit_test(test_error_recovery),
      cmocka_unit_test(test_line_max),
      cmocka_unit_test(test_host_clock),
      cmocka_unit_test(test_telemetry_parse_one_call),
      cmocka_unit_test(test_every_split),
      cmocka_unit_test(test_crlf),
      cmocka_unit_test(test_truncated_and_mutated),
      cmocka_unit_test(test_garbage),
  };
  return cmocka_run_group_tests(tests, NULL, teardown_all);
}
