/*
 * scrape.c - read a model server's /metrics page and print what inferlb
 * makes of it: the dialect detected and every signal of the typed record.
 *
 *   curl -s http://replica:8000/metrics | ./scrape
 *   ./scrape page1.txt page2.txt     (two pages: counters become rates;
 *                                      one second apart, as if scraped so)
 *   ./scrape --model llama-3-8b triton.txt   (one model of several)
 *
 * What it shows a host program: one ilb_scrape per replica, fed the body
 * in pieces as they arrive, ilb_scrape_finish once per page with the time
 * it was fetched, and ilb_scrape_error for a malformed page.
 *
 * SPDX-License-Identifier: MIT
 */
#include <inferlb/inferlb.h>

#include <stdio.h>
#include <string.h>

#define SEC UINT64_C(1000000000)

/* The value of signal s in t. */
static double signal_value(const ilb_telemetry *t, int32_t s) {
  const double v[ILB_SIGNAL_COUNT] = {
      t->requests_waiting, t->requests_running, t->kv_cache_usage,
      t->gpu_utilization,  t->gpu_memory_free,  t->gpu_memory_total,
      t->prefix_hit_rate,  t->gen_tokens_per_s, t->ttft_s,
      t->queue_time_s,     t->request_rate,     t->max_concurrency,
      t->model_ready,      t->kv_block_size,    t->kv_blocks_total};
  return v[s];
}

/* Feed one page from f in 4 KiB pieces (as a socket would give it) and
 * finish it. Returns 0, or 1 after printing why the page was refused. */
static int read_page(ilb_telemetry *t, ilb_scrape *sc, FILE *f,
                     const char *name, uint64_t fetched_ns) {
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    if (ilb_scrape_feed(sc, buf, n) == ILB_EPARSE)
      break; /* the rest of the page is ignored; finish says why */
  ilb_telemetry_init(t);
  int rc = ilb_scrape_finish(t, sc, fetched_ns);
  if (rc == ILB_EPARSE) {
    uint64_t line = 0;
    const char *what = "?";
    ilb_scrape_error(&line, &what, sc);
    fprintf(stderr, "scrape: %s: line %llu: %s\n", name,
            (unsigned long long)line, what);
    return 1;
  }
  if (rc == ILB_ENOENT)
    fprintf(stderr, "scrape: %s: no metric of a known server\n", name);
  else if (rc < 0) {
    fprintf(stderr, "scrape: %s: %s\n", name, ilb_strerror(rc));
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  ilb_scrape_config cfg;
  ilb_scrape *sc = NULL;
  ilb_telemetry t;
  int first = 1, pages = 0, rc;

  ilb_scrape_config_init(&cfg);
  if (argc > 2 && strcmp(argv[1], "--model") == 0) {
    cfg.label_value = argv[2];
    first = 3;
  }
  if ((rc = ilb_scrape_new(&sc, &cfg, NULL)) != 0) {
    fprintf(stderr, "scrape: ilb_scrape_new: %s\n", ilb_strerror(rc));
    return 2;
  }
  if (first >= argc) { /* standard input */
    rc = read_page(&t, sc, stdin, "<stdin>", SEC);
    pages = 1;
  } else {
    for (int i = first; i < argc && rc == 0; i++, pages++) {
      FILE *f = fopen(argv[i], "rb");
      if (!f) {
        perror(argv[i]);
        rc = 1;
        break;
      }
      rc = read_page(&t, sc, f, argv[i], (uint64_t)(pages + 1) * SEC);
      fclose(f);
    }
  }
  if (rc == 0) {
    int32_t dialect = ILB_DIALECT_AUTO;
    ilb_scrape_dialect(&dialect, sc);
    printf("dialect %s, %d page%s\n", ilb_dialect_name(dialect), pages,
           pages == 1 ? "" : "s");
    for (int32_t s = 0; s < ILB_SIGNAL_COUNT; s++)
      if (t.present & ILB_SIGNAL_BIT(s))
        printf("  %-18s %.6g\n", ilb_signal_name(s), signal_value(&t, s));
  }
  ilb_scrape_free(sc);
  return rc;
}
