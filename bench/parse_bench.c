/*
 * parse_bench - microseconds to parse one /metrics page with ilb_scrape:
 * ilb_scrape_feed of the whole page plus ilb_scrape_finish, on one parser
 * object (as a host keeps one per replica), page after page.
 *
 * Pages: a generated vLLM page of exactly 200 series (the families and
 * bucket bounds of vllm/v1/metrics/loggers.py with the Python process
 * metrics in front, one engine), then every page of tests/fixtures/metrics.
 *
 * Output (stdout):
 *   BENCH parse=vllm series=200 us=<x>
 *   BENCH parse=<dialect> series=<n> us=<x> page=<fixture>   (per fixture)
 * then "# " lines: bytes, throughput, the 200-series page fed in 4 KiB
 * pieces, and the target (<= 20 us for the 200-series vLLM page; reported,
 * not enforced). us is the median of --reps repetitions (default 7), each
 * timing enough pages to last about 20 ms.
 *
 * Usage: parse_bench [--reps N] [--quick] [--fixtures DIR]
 * SPDX-License-Identifier: MIT
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <inferlb/inferlb.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef ILB_FIXTURES_DIR
#define ILB_FIXTURES_DIR "tests/fixtures/metrics"
#endif

#define TARGET_US 20.0
#define MAX_REPS 101

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- the generated page --------------------------------------------------- */

typedef struct {
  char *p;
  size_t n, cap;
  int series;
} text;

static void put(text *t, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int w = vsnprintf(t->p + t->n, t->cap - t->n, fmt, ap);
    va_end(ap);
    if (w < 0)
      abort();
    if ((size_t)w < t->cap - t->n) {
      t->n += (size_t)w;
      return;
    }
    t->cap = t->cap * 2 + (size_t)w;
    t->p = realloc(t->p, t->cap);
    if (!t->p)
      abort();
  }
}

#define LBL "engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\""

static void family(text *t, const char *name, const char *type,
                   const char *help) {
  put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(text *t, const char *name, const char *labels, double v) {
  if (labels)
    put(t, "%s{%s} %.17g\n", name, labels, v);
  else
    put(t, "%s %.17g\n", name, v);
  t->series++;
}

static void histogram(text *t, const char *name, const char *help,
                      const double *b, int nb, double count, double sum) {
  char lab[256];
  family(t, name, "histogram", help);
  double acc = 0;
  for (int i = 0; i <= nb; i++) {
    char le[32];
    if (i < nb)
      snprintf(le, sizeof le, "%.17g", b[i]);
    else
      snprintf(le, sizeof le, "+Inf");
    acc = i < nb ? count * (i + 1) / (nb + 1) : count;
    snprintf(lab, sizeof lab, "engine=\"0\",le=\"%s\",model_name="
             "\"meta-llama/Llama-3.1-8B-Instruct\"", le);
    put(t, "%s_bucket{%s} %.1f\n", name, lab, (double)(long long)acc);
    t->series++;
  }
  put(t, "%s_count{%s} %.1f\n", name, LBL, count);
  put(t, "%s_sum{%s} %.17g\n", name, LBL, sum);
  t->series += 2;
}

static text vllm_page(void) {
  static const double ttft[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06,
                                0.08,  0.1,   0.25, 0.5,  0.75, 1.0,
                                2.5,   5.0,   7.5,  10.0, 20.0, 40.0,
                                80.0,  160.0, 640.0, 2560.0};
  static const double tpot[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                0.3,  0.4,   0.5,  0.75,  1.0, 2.5,  5.0,
                                7.5,  10.0,  20.0, 40.0,  80.0};
  static const double lat[] = {0.3,  0.5,  0.8,  1.0,   1.5,   2.0,  2.5,
                               5.0,  10.0, 15.0, 20.0,  30.0,  40.0, 50.0,
                               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0,
                               7680.0};
  static const double tok[] = {1,   2,   5,    10,   20,   50,
                               100, 200, 500, 1000, 2000, 5000};
  text t = {malloc(65536), 0, 65536, 0};
  if (!t.p)
    abort();
  static const char *const gen[] = {"0", "1", "2"};
  family(&t, "python_gc_objects_collected_total", "counter",
         "Objects collected during gc");
  for (int i = 0; i < 3; i++) {
    char l[32];
    snprintf(l, sizeof l, "generation=\"%s\"", gen[i]);
    sample(&t, "python_gc_objects_collected_total", l, 18234.0 / (i + 1));
  }
  family(&t, "python_gc_objects_uncollectable_total", "counter",
         "Uncollectable objects found during GC");
  for (int i = 0; i < 3; i++) {
    char l[32];
    snprintf(l, sizeof l, "generation=\"%s\"", gen[i]);
    sample(&t, "python_gc_objects_uncollectable_total", l, 0);
  }
  family(&t, "python_gc_collections_total", "counter",
         "Number of times this generation was collected");
  for (int i = 0; i < 3; i++) {
    char l[32];
    snprintf(l, sizeof l, "generation=\"%s\"", gen[i]);
    sample(&t, "python_gc_collections_total", l, 2113.0 / (i + 1));
  }
  family(&t, "process_virtual_memory_bytes", "gauge",
         "Virtual memory size in bytes.");
  sample(&t, "process_virtual_memory_bytes", NULL, 4.2961690624e+10);
  family(&t, "process_resident_memory_bytes", "gauge",
         "Resident memory size in bytes.");
  sample(&t, "process_resident_memory_bytes", NULL, 3.15641856e+09);
  family(&t, "process_start_time_seconds", "gauge",
         "Start time of the process since unix epoch in seconds.");
  sample(&t, "process_start_time_seconds", NULL, 1.73210457542e+09);
  family(&t, "process_cpu_seconds_total", "counter",
         "Total user and system CPU time spent in seconds.");
  sample(&t, "process_cpu_seconds_total", NULL, 5123.47);
  family(&t, "process_open_fds", "gauge", "Number of open file descriptors.");
  sample(&t, "process_open_fds", NULL, 142);
  family(&t, "process_max_fds", "gauge",
         "Maximum number of open file descriptors.");
  sample(&t, "process_max_fds", NULL, 1048576);

  family(&t, "vllm:num_requests_running", "gauge",
         "Number of requests in model execution batches.");
  sample(&t, "vllm:num_requests_running", LBL, 12);
  family(&t, "vllm:num_requests_waiting", "gauge",
         "Number of requests waiting to be processed.");
  sample(&t, "vllm:num_requests_waiting", LBL, 3);
  family(&t, "vllm:kv_cache_usage_perc", "gauge",
         "KV-cache usage. 1 means 100 percent usage.");
  sample(&t, "vllm:kv_cache_usage_perc", LBL, 0.6171875);
  family(&t, "vllm:prefix_cache_queries_total", "counter",
         "Prefix cache queries, in terms of number of queried tokens.");
  sample(&t, "vllm:prefix_cache_queries_total", LBL, 1.23456e6);
  family(&t, "vllm:prefix_cache_hits_total", "counter",
         "Prefix cache hits, in terms of number of cached tokens.");
  sample(&t, "vllm:prefix_cache_hits_total", LBL, 456789);
  family(&t, "vllm:num_preemptions_total", "counter",
         "Cumulative number of preemption from the engine.");
  sample(&t, "vllm:num_preemptions_total", LBL, 4);
  family(&t, "vllm:prompt_tokens_total", "counter",
         "Number of prefill tokens processed.");
  sample(&t, "vllm:prompt_tokens_total", LBL, 2.4118e6);
  family(&t, "vllm:generation_tokens_total", "counter",
         "Number of generation tokens processed.");
  sample(&t, "vllm:generation_tokens_total", LBL, 5.1e5);
  family(&t, "vllm:request_success_total", "counter",
         "Count of successfully processed requests.");
  sample(&t, "vllm:request_success_total",
         "engine=\"0\",finished_reason=\"abort\",model_name="
         "\"meta-llama/Llama-3.1-8B-Instruct\"",
         7);
  sample(&t, "vllm:request_success_total",
         "engine=\"0\",finished_reason=\"length\",model_name="
         "\"meta-llama/Llama-3.1-8B-Instruct\"",
         52);
  sample(&t, "vllm:request_success_total",
         "engine=\"0\",finished_reason=\"stop\",model_name="
         "\"meta-llama/Llama-3.1-8B-Instruct\"",
         941);
  family(&t, "vllm:cache_config_info", "gauge",
         "Information of the LLMEngine CacheConfig");
  sample(&t, "vllm:cache_config_info",
         "block_size=\"16\",cache_dtype=\"auto\",calculate_kv_scales=\"False\","
         "cpu_offload_gb=\"0\",enable_prefix_caching=\"True\",engine=\"0\","
         "gpu_memory_utilization=\"0.9\",is_attention_free=\"False\","
         "num_cpu_blocks=\"None\",num_gpu_blocks=\"27000\","
         "num_gpu_blocks_override=\"None\",prefix_caching_hash_algo="
         "\"sha256\",sliding_window=\"None\",swap_space=\"4\"",
         1);
#define NB(a) (int)(sizeof(a) / sizeof(a[0]))
  histogram(&t, "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.", ttft, NB(ttft),
            1000, 120.5);
  histogram(&t, "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.", tpot, NB(tpot),
            480211, 13127.015625);
  histogram(&t, "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.", lat, NB(lat),
            1000, 14210.25);
  histogram(&t, "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.", lat,
            NB(lat), 1000, 311.75);
  histogram(&t, "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.", lat,
            NB(lat), 1000, 13898.5);
  histogram(&t, "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.", lat,
            NB(lat), 1000, 97.25);
  histogram(&t, "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.", tok, NB(tok), 1000,
            2411800);
  histogram(&t, "vllm:request_generation_tokens",
            "Number of generation tokens processed.", tok, NB(tok), 1000,
            510000);
  return t;
}

/* ---- timing --------------------------------------------------------------- */

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static uint64_t ts_ns = 1; /* page timestamps, increasing */

/* One page: feed in pieces of `piece` bytes (0 = whole), finish. */
static void one_page(ilb_scrape *s, const char *p, size_t n, size_t piece) {
  int rc = 0;
  if (!piece) {
    rc = ilb_scrape_feed(s, p, n);
  } else {
    for (size_t k = 0; k < n && !rc; k += piece)
      rc = ilb_scrape_feed(s, p + k, n - k < piece ? n - k : piece);
  }
  ilb_telemetry t;
  ilb_telemetry_init(&t);
  ts_ns += 1000000000u;
  int frc = ilb_scrape_finish(&t, s, ts_ns);
  if (rc || frc) {
    fprintf(stderr, "parse failed: feed %s, finish %s\n", ilb_err_name(rc),
            ilb_err_name(frc));
    exit(1);
  }
}

/* Median microseconds per page over reps repetitions. */
static double measure(const char *p, size_t n, size_t piece, int reps,
                      double target_ns) {
  ilb_scrape *s;
  if (ilb_scrape_new(&s, NULL, NULL)) {
    fprintf(stderr, "ilb_scrape_new failed\n");
    exit(1);
  }
  /* warm up, and size the repetitions */
  uint64_t t0 = now_ns();
  long iters = 0;
  while (now_ns() - t0 < (uint64_t)(target_ns / 4) || iters < 10) {
    one_page(s, p, n, piece);
    iters++;
  }
  double per = (double)(now_ns() - t0) / (double)iters;
  long k = (long)(target_ns / per);
  if (k < 10)
    k = 10;
  double us[MAX_REPS];
  for (int r = 0; r < reps; r++) {
    uint64_t a = now_ns();
    for (long i = 0; i < k; i++)
      one_page(s, p, n, piece);
    us[r] = (double)(now_ns() - a) / (double)k / 1000.0;
  }
  ilb_scrape_free(s);
  qsort(us, (size_t)reps, sizeof us[0], cmp_d);
  return us[reps / 2];
}

static char *load(const char *dir, const char *name, size_t *n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 1 << 16;
  char *p = malloc(cap);
  *n = 0;
  for (;;) {
    if (*n == cap && !(p = realloc(p, cap *= 2)))
      abort();
    size_t got = fread(p + *n, 1, cap - *n, f);
    if (!got)
      break;
    *n += got;
  }
  fclose(f);
  return p;
}

static int count_series(const char *p, size_t n) {
  int c = 0, bol = 1;
  for (size_t i = 0; i < n; i++) {
    if (bol && p[i] != '#' && p[i] != '\n')
      c++;
    bol = p[i] == '\n';
  }
  return c;
}

int main(int argc, char **argv) {
  int reps = 7;
  double target_ns = 20e6;
  const char *dir = ILB_FIXTURES_DIR;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--quick")) {
      reps = 3;
      target_ns = 2e6;
    } else if (!strcmp(argv[i], "--fixtures") && i + 1 < argc) {
      dir = argv[++i];
    } else {
      fprintf(stderr, "usage: %s [--reps N] [--quick] [--fixtures DIR]\n",
              argv[0]);
      return 2;
    }
  }
  if (reps < 1 || reps > MAX_REPS) {
    fprintf(stderr, "--reps: 1..%d\n", MAX_REPS);
    return 2;
  }

  text page = vllm_page();
  if (page.series != 200 || count_series(page.p, page.n) != 200) {
    fprintf(stderr, "generated page has %d series, not 200\n", page.series);
    return 1;
  }
  double us = measure(page.p, page.n, 0, reps, target_ns);
  double us4k = measure(page.p, page.n, 4096, reps, target_ns);
  printf("BENCH parse=vllm series=200 us=%.2f\n", us);

  static const struct {
    const char *file, *dialect;
  } fx[] = {{"vllm.txt", "vllm"},       {"vllm_old.txt", "vllm"},
            {"sglang.txt", "sglang"},   {"llamacpp.txt", "llamacpp"},
            {"triton.txt", "triton"},   {"tgi.txt", "tgi"}};
  for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
    size_t n;
    char *p = load(dir, fx[i].file, &n);
    if (!p) {
      printf("# %s/%s: not found, skipped\n", dir, fx[i].file);
      continue;
    }
    double u = measure(p, n, 0, reps, target_ns);
    printf("BENCH parse=%s series=%d us=%.2f page=%s\n", fx[i].dialect,
           count_series(p, n), u, fx[i].file);
    free(p);
  }
  printf("# generated vLLM page: %zu bytes, %.0f MB/s; in 4 KiB pieces "
         "us=%.2f\n",
         page.n, (double)page.n / us, us4k);
  printf("# target: parse=vllm series=200 us <= %.0f: %s (median of %d)\n",
         TARGET_US, us <= TARGET_US ? "met" : "NOT met", reps);
  free(page.p);
  return 0;
}
