/*
 * The simulator's SVG chart writer (bench/sim/svg.c):
 *   1. well-formedness of the document: prolog, root, balanced groups,
 *      one polyline per non-empty series, one legend entry per series
 *      (at most 16, then "+N more"), an empty chart with its axes;
 *   2. text: XML escaping of names, titles and labels; control
 *      characters and bytes that are not UTF-8 replaced; long legend
 *      names cut, with the full name as a tooltip;
 *   3. determinism (the same bytes twice, and under another LC_NUMERIC
 *      where one is installed);
 *   4. skipped points: NaN and infinities break the line, on a log axis
 *      also values <= 0; extreme values stay finite and well-formed;
 *   5. ticks: linear 1-2-5 steps (0..97 -> 0,20,...,100), log decades,
 *      1-2-5 labels on short log axes, every 5th decade on long ones,
 *      fixed ranges, the label format (0.05, 1.2, 1.5k, 1M, 1e15);
 *   6. styles: 14 series have 14 distinct colour / dash pairs;
 *   7. files: written to a mkdtemp directory (and, when python3 is there,
 *      parsed by xml.dom.minidom), errors for unwritable paths, bad
 *      arguments.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "svg.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

#define TMPDIR_PREFIX "test_sim_svg"
#include "tmpdir.h"


/* The document for these series; checked for the invariants every
 * document has. Free it. */
static char *render(const sim_chart *c, const sim_series *s, size_t n) {
  char *out = (char *)"junk";
  size_t len = 12345;
  char err[256] = "";
  int rc = sim_svg_lines_buf(&out, &len, c, s, n, err, sizeof err);
  if (rc != 0)
    fail_msg("sim_svg_lines_buf: %d %s", rc, err);
  assert_non_null(out);
  assert_int_equal(strlen(out), len);
  return out;
}

static size_t count(const char *hay, const char *needle) {
  size_t n = 0, k = strlen(needle);
  for (const char *p = strstr(hay, needle); p; p = strstr(p + k, needle))
    n++;
  return n;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

/* Structure shared by every document. */
static void check_well_formed(const char *svg) {
  assert_true(strncmp(svg, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg ",
                      44) == 0);
  assert_true(ends_with(svg, "</svg>\n"));
  assert_int_equal(count(svg, "<svg"), 1);
  assert_int_equal(count(svg, "</svg>"), 1);
  assert_int_equal(count(svg, "<g ") + count(svg, "<g>"), count(svg, "</g>"));
  assert_int_equal(count(svg, "<text"), count(svg, "</text>"));
  assert_int_equal(count(svg, "<title>"), count(svg, "</title>"));
  assert_int_equal(count(svg, "\""), 2 * (count(svg, "=\"")));
  /* No script, no external reference, no number printf could spell. */
  assert_null(strstr(svg, "<script"));
  assert_null(strstr(svg, "<style"));
  assert_null(strstr(svg, "href"));
  assert_null(strstr(svg, "@import"));
  assert_null(strstr(svg, "nan"));
  assert_null(strstr(svg, "inf"));
  assert_null(strstr(svg, "e+"));
}

/* The labels of the group with this class, joined by ",". */
static void labels(const char *svg, const char *cls, char *out, size_t n) {
  char open[64];
  snprintf(open, sizeof open, "<g class=\"%s\"", cls);
  const char *p = strstr(svg, open);
  assert_non_null(p);
  const char *end = strstr(p, "</g>");
  assert_non_null(end);
  size_t o = 0;
  out[0] = '\0';
  while ((p = strstr(p, "<text")) != NULL && p < end) {
    p = strchr(p, '>') + 1;
    const char *q = strstr(p, "</text>");
    assert_non_null(q);
    size_t k = (size_t)(q - p);
    assert_true(o + k + 2 < n);
    if (o)
      out[o++] = ',';
    memcpy(out + o, p, k);
    o += k;
    out[o] = '\0';
    p = q;
  }
}

static void assert_labels(const char *svg, const char *cls,
                          const char *want) {
  char got[1024];
  labels(svg, cls, got, sizeof got);
  if (strcmp(got, want) != 0)
    fail_msg("%s: got [%s], want [%s]", cls, got, want);
}

/* Coordinate pairs over all polylines. */
static size_t polyline_points(const char *svg) {
  size_t n = 0;
  for (const char *p = strstr(svg, "<polyline points=\""); p;
       p = strstr(p, "<polyline points=\"")) {
    p += strlen("<polyline points=\"");
    const char *q = strchr(p, '"');
    n++;
    for (; p < q; p++)
      n += *p == ' ';
  }
  return n;
}

/* The y tick labels of a chart of one series. */
static void assert_y_ticks(const double *y, size_t n, int log_y,
                           double y_min, double y_max, const char *want) {
  sim_chart c = {NULL, NULL, NULL, log_y, y_min, y_max};
  sim_series s = {"s", NULL, y, n};
  char *svg = render(&c, &s, 1);
  check_well_formed(svg);
  assert_labels(svg, "y-labels", want);
  free(svg);
}

/* ------------------------------------------------------------------------ */
/* 1. Structure                                                              */
/* ------------------------------------------------------------------------ */

static const double X5[] = {0, 1, 2, 3, 4};
static const double Y5[] = {3, 1, 4, 1, 5};

static void test_structure(void **state) {
  (void)state;
  static const double y2[] = {10, 20, 30, 40, 50};
  sim_series s[3] = {
      {"first", X5, Y5, 5},
      {"empty", NULL, NULL, 0},
      {"second", X5, y2, 5},
  };
  sim_chart c = {"Title", "x label", "y label", 0, 0, 0};
  char *svg = render(&c, s, 3);
  check_well_formed(svg);
  assert_int_equal(count(svg, "<polyline "), 2);
  assert_int_equal(count(svg, "<g class=\"series\""), 3);
  assert_int_equal(count(svg, "<g class=\"entry\">"), 3);
  assert_int_equal(count(svg, "<g class=\"legend\""), 1);
  assert_null(strstr(svg, " more<"));
  assert_non_null(strstr(svg, ">Title</text>"));
  assert_non_null(strstr(svg, "<title>Title</title>"));
  assert_non_null(strstr(svg, ">x label</text>"));
  assert_non_null(strstr(svg, ">y label</text>"));
  assert_non_null(strstr(svg, ">empty</text>"));
  assert_non_null(strstr(svg, "width=\"900\" height=\"500\""));
  /* 10 markers: one circle per point, both series in style 0. */
  assert_int_equal(count(svg, "a3,3 0 1,0 6,0a3,3 0 1,0 -6,0"), 10 + 3);
  assert_int_equal(polyline_points(svg), 10);
  assert_labels(svg, "x-labels", "0,1,2,3,4");
  assert_labels(svg, "y-labels", "0,10,20,30,40,50");
  /* Reasonably small. */
  assert_true(strlen(svg) < 8000);
  free(svg);

  /* NULL chart, NULL names, x NULL = indices. */
  sim_series t[2] = {{NULL, NULL, Y5, 5}, {NULL, X5, Y5, 1}};
  svg = render(NULL, t, 2);
  check_well_formed(svg);
  assert_non_null(strstr(svg, ">series 1</text>"));
  assert_non_null(strstr(svg, ">series 2</text>"));
  assert_null(strstr(svg, "class=\"title\""));
  assert_null(strstr(svg, "class=\"xlabel\""));
  assert_null(strstr(svg, "class=\"ylabel\""));
  assert_int_equal(count(svg, "<polyline "), 2); /* a 1-point run too */
  assert_labels(svg, "x-labels", "0,1,2,3,4");
  free(svg);
}

static void test_empty_chart(void **state) {
  (void)state;
  sim_chart c = {"Nothing", "x", "y", 0, 0, 0};
  char *svg = render(&c, NULL, 0);
  check_well_formed(svg);
  assert_int_equal(count(svg, "<polyline"), 0);
  assert_int_equal(count(svg, "class=\"series\""), 0);
  assert_int_equal(count(svg, "class=\"legend\""), 0);
  assert_labels(svg, "x-labels", "0,0.2,0.4,0.6,0.8,1");
  assert_labels(svg, "y-labels", "0,0.2,0.4,0.6,0.8,1");
  /* The axes are there. */
  assert_non_null(strstr(svg, "<path d=\"M76,44V442H876"));
  free(svg);

  /* Series present, none drawable: axes, legend, no lines. */
  static const double bad[] = {NAN, INFINITY, -INFINITY};
  sim_series s[2] = {{"bad", NULL, bad, 3}, {"none", NULL, NULL, 0}};
  svg = render(&c, s, 2);
  check_well_formed(svg);
  assert_int_equal(count(svg, "<polyline"), 0);
  assert_int_equal(count(svg, "<g class=\"entry\">"), 2);
  assert_labels(svg, "y-labels", "0,0.2,0.4,0.6,0.8,1");
  free(svg);

  c.log_y = 1;
  svg = render(&c, s, 2);
  check_well_formed(svg);
  assert_labels(svg, "y-labels", "1,2,5,10");
  free(svg);
}

static void test_legend_limit(void **state) {
  (void)state;
  sim_series s[20];
  char names[20][16];
  for (int i = 0; i < 20; i++) {
    snprintf(names[i], sizeof names[i], "s%02d", i);
    s[i] = (sim_series){names[i], X5, Y5, 5};
  }
  char *svg = render(NULL, s, 20);
  check_well_formed(svg);
  assert_int_equal(count(svg, "<polyline "), 20);
  assert_int_equal(count(svg, "<g class=\"entry\">"), 16);
  assert_non_null(strstr(svg, ">s15</text>"));
  assert_null(strstr(svg, ">s16</text>"));
  assert_non_null(strstr(svg, ">+4 more</text>"));
  free(svg);

  svg = render(NULL, s, 16);
  assert_int_equal(count(svg, "<g class=\"entry\">"), 16);
  assert_null(strstr(svg, " more<"));
  free(svg);
}

/* ------------------------------------------------------------------------ */
/* 2. Text                                                                   */
/* ------------------------------------------------------------------------ */

static void test_escaping(void **state) {
  (void)state;
  sim_series s[3] = {
      {"a<b & \"c\"", X5, Y5, 5},
      {"it's > 1 \xc2\xb5s", X5, Y5, 5},                 /* U+00B5 kept */
      {"ctl\x01tab\tbad\xff\xc3(end\xed\xa0\x80", X5, Y5, 5}, /* -> ? */
  };
  sim_chart c = {"T & <'x'>", "x \"in\" s", "y < 5", 0, 0, 0};
  char *svg = render(&c, s, 3);
  check_well_formed(svg);
  assert_non_null(strstr(svg, ">a&lt;b &amp; &quot;c&quot;</text>"));
  assert_non_null(strstr(svg, ">it&apos;s &gt; 1 \xc2\xb5s</text>"));
  /* (split: "??(" and "??<" would be trigraphs) */
  assert_non_null(strstr(svg, ">ctl?tab bad?" "?(end?" "?" "?</text>"));
  assert_non_null(strstr(svg, ">T &amp; &lt;&apos;x&apos;&gt;</text>"));
  assert_non_null(strstr(svg, "<title>T &amp; &lt;&apos;x&apos;&gt;</title>"));
  assert_non_null(strstr(svg, ">x &quot;in&quot; s</text>"));
  assert_non_null(strstr(svg, ">y &lt; 5</text>"));
  assert_null(strstr(svg, "a<b"));
  assert_null(strstr(svg, "\xff"));
  assert_null(strstr(svg, "\x01"));
  free(svg);
}

static void test_long_names(void **state) {
  (void)state;
  /* 30 bytes; the cut (24 bytes) must not split the 2-byte U+00E9. */
  const char *name = "abcdefghijklmnopqrstuvw\xc3\xa9xyz<&";
  sim_series s[2] = {{name, X5, Y5, 5},
                     {"exactly-24-bytes-long-ok", X5, Y5, 5}};
  char *svg = render(NULL, s, 2);
  check_well_formed(svg);
  assert_non_null(strstr(svg, ">abcdefghijklmnopqrstuvw...</text>"));
  assert_non_null(strstr(
      svg, "<title>abcdefghijklmnopqrstuvw\xc3\xa9xyz&lt;&amp;</title>"));
  assert_non_null(strstr(svg, ">exactly-24-bytes-long-ok</text>"));
  assert_int_equal(count(svg, "<title>"), 1);
  free(svg);
}

/* ------------------------------------------------------------------------ */
/* 3. Determinism                                                            */
/* ------------------------------------------------------------------------ */

/* A chart of 5 series of 200 points on a log axis, one NaN, one -1. */
static void sample_input(sim_chart *c, const sim_series **out) {
  static double x[200], y[5][200];
  static sim_series s[5];
  static const char *names[5] = {"round_robin", "least_conn", "p2c",
                                 "chwbl", "a<b & \"c\""};
  for (int j = 0; j < 200; j++) {
    x[j] = 0.37 * j;
    for (int i = 0; i < 5; i++)
      y[i][j] = (i + 1) * exp(0.031 * j) * (1.0 + 0.2 * sin(0.7 * j + i));
  }
  y[2][50] = NAN;
  y[3][60] = -1;
  for (int i = 0; i < 5; i++)
    s[i] = (sim_series){names[i], x, y[i], 200};
  *c = (sim_chart){"TTFT p99", "offered load (req/s)", "ms", 1, 0, 0};
  *out = s;
}

static char *sample(size_t *len) {
  sim_chart c;
  const sim_series *s;
  sample_input(&c, &s);
  char *out = NULL;
  char err[128];
  assert_int_equal(sim_svg_lines_buf(&out, len, &c, s, 5, err, sizeof err),
                   0);
  return out;
}

static void test_deterministic(void **state) {
  (void)state;
  size_t n1, n2;
  char *a = sample(&n1);
  char *b = sample(&n2);
  check_well_formed(a);
  assert_int_equal(n1, n2);
  assert_memory_equal(a, b, n1);
  free(b);

  /* The locale's decimal comma is not used (where such a locale is
   * installed; otherwise this repeats the check above). */
  static const char *const commas[] = {"de_DE.UTF-8", "de_DE.utf8",
                                       "fr_FR.UTF-8", "fr_FR.utf8"};
  for (size_t i = 0; i < sizeof commas / sizeof commas[0]; i++) {
    if (setlocale(LC_NUMERIC, commas[i]) == NULL)
      continue;
    char *c = sample(&n2);
    setlocale(LC_NUMERIC, "C");
    assert_int_equal(n1, n2);
    assert_memory_equal(a, c, n1);
    free(c);
    break;
  }
  setlocale(LC_NUMERIC, "C");
  free(a);
}

/* ------------------------------------------------------------------------ */
/* 4. Skipped points                                                         */
/* ------------------------------------------------------------------------ */

static void test_nan_skipped(void **state) {
  (void)state;
  static const double x[] = {0, 1, 2, 3, 4, 5, 6, 7};
  static const double y[] = {1, 2, NAN, 4, 5, INFINITY, 7, 8};
  static const double xs[] = {0, NAN, 2, 3, 4, 5, 6, -INFINITY};
  sim_series s = {"gappy", x, y, 8};
  char *svg = render(NULL, &s, 1);
  check_well_formed(svg);
  assert_int_equal(count(svg, "<polyline "), 3); /* 0-1, 3-4, 6-7 */
  assert_int_equal(polyline_points(svg), 6);
  assert_int_equal(count(svg, "a3,3 0 1,0 6,0"), 6 + 1);
  assert_labels(svg, "y-labels", "1,2,3,4,5,6,7,8");
  free(svg);

  /* NaN in x too; a leading and trailing bad point open no run. */
  s.x = xs;
  svg = render(NULL, &s, 1);
  check_well_formed(svg);
  assert_int_equal(count(svg, "<polyline "), 3); /* 0, 3-4, 6 */
  assert_int_equal(polyline_points(svg), 4);
  free(svg);

  /* A log axis skips values <= 0. */
  static const double ylog[] = {10, 0, 100, -5, 1000, 10000, 0, 1};
  sim_chart c = {NULL, NULL, NULL, 1, 0, 0};
  s.x = x;
  s.y = ylog;
  svg = render(&c, &s, 1);
  check_well_formed(svg);
  assert_int_equal(count(svg, "<polyline "), 4); /* 0, 2, 4-5, 7 */
  assert_int_equal(polyline_points(svg), 5);
  assert_labels(svg, "y-labels", "1,10,100,1k,10k");
  free(svg);
}

static void test_extremes(void **state) {
  (void)state;
  static const double big[] = {1e308, -1e308, DBL_MAX, 0};
  static const double tiny[] = {5e-324, 1e-310, 2e-310};
  static const double same[] = {3, 3, 3};
  static const double xsame[] = {1e15, 1e15, 1e15};
  sim_series s[4] = {
      {"big", NULL, big, 4},
      {"tiny", NULL, tiny, 3},
      {"same", xsame, same, 3},
      {"one", NULL, same, 1},
  };
  for (int log_y = 0; log_y <= 1; log_y++)
    for (size_t i = 0; i < 4; i++) {
      sim_chart c = {NULL, NULL, NULL, log_y, 0, 0};
      char *svg = render(&c, &s[i], 1);
      check_well_formed(svg);
      free(svg);
      c.y_min = -1e308;
      c.y_max = 1e308;
      svg = render(&c, &s[i], 1);
      check_well_formed(svg);
      free(svg);
      c.y_min = 1;
      c.y_max = 1 + 1e-15;
      svg = render(&c, &s[i], 1);
      check_well_formed(svg);
      free(svg);
    }
  /* One value: widened by 10 %. */
  assert_y_ticks(same, 3, 0, 0, 0, "2.7,2.8,2.9,3,3.1,3.2,3.3");
  static const double zeros[] = {0, 0};
  assert_y_ticks(zeros, 2, 0, 0, 0, "0,0.2,0.4,0.6,0.8,1");
  static const double hundred[] = {100, 100};
  assert_y_ticks(hundred, 2, 1, 0, 0, "10,20,50,100,200,500,1k");
}

/* ------------------------------------------------------------------------ */
/* 5. Ticks                                                                  */
/* ------------------------------------------------------------------------ */

static void test_linear_ticks(void **state) {
  (void)state;
  static const double y97[] = {0, 12.5, 97};
  assert_y_ticks(y97, 3, 0, 0, 0, "0,20,40,60,80,100");
  static const double x97[] = {0, 50, 97};
  sim_series s = {"s", x97, y97, 3};
  char *svg = render(NULL, &s, 1);
  assert_labels(svg, "x-labels", "0,20,40,60,80,100");
  free(svg);

  static const double a[] = {0, 1};
  assert_y_ticks(a, 2, 0, 0, 0, "0,0.2,0.4,0.6,0.8,1");
  static const double b[] = {0.01, 0.25};
  assert_y_ticks(b, 2, 0, 0, 0, "0,0.05,0.1,0.15,0.2,0.25");
  static const double c[] = {1.1, 1.9};
  assert_y_ticks(c, 2, 0, 0, 0, "1,1.2,1.4,1.6,1.8,2");
  static const double d[] = {0, 12000};
  assert_y_ticks(d, 2, 0, 0, 0, "0,2k,4k,6k,8k,10k,12k");
  static const double e[] = {1000, 1490};
  assert_y_ticks(e, 2, 0, 0, 0, "1k,1.1k,1.2k,1.3k,1.4k,1.5k");
  static const double f[] = {-5, 5};
  assert_y_ticks(f, 2, 0, 0, 0, "-6,-4,-2,0,2,4,6");
  static const double g[] = {-97, -3};
  assert_y_ticks(g, 2, 0, 0, 0, "-100,-80,-60,-40,-20,0");
  static const double h[] = {0, 2.5e6};
  assert_y_ticks(h, 2, 0, 0, 0, "0,500k,1M,1.5M,2M,2.5M");
  static const double k[] = {0, 3.1e16};
  assert_y_ticks(k, 2, 0, 0, 0, "0,5e15,1e16,1.5e16,2e16,2.5e16,3e16,3.5e16");
  static const double m[] = {0, 3e-7};
  assert_y_ticks(m, 2, 0, 0, 0, "0,5e-8,1e-7,1.5e-7,2e-7,2.5e-7,3e-7");
  /* Fewer than 5 ticks at the first fitting step: widened to 5. */
  static const double n[] = {0, 15};
  assert_y_ticks(n, 2, 0, 0, 0, "0,5,10,15,20");
  static const double o[] = {-15, 0};
  assert_y_ticks(o, 2, 0, 0, 0, "-20,-15,-10,-5,0");
  static const double p[] = {-4, 11};
  assert_y_ticks(p, 2, 0, 0, 0, "-5,0,5,10,15");
  /* Every automatic axis has 5 to 8 ticks. */
  for (int i = 1; i <= 2000; i++) {
    double r[2] = {-0.37 * i * (i % 3 == 0), 0.013 * i * i};
    sim_chart ch = {NULL, NULL, NULL, 0, 0, 0};
    sim_series ss = {"s", NULL, r, 2};
    char *svg2 = render(&ch, &ss, 1);
    char got[1024];
    labels(svg2, "y-labels", got, sizeof got);
    size_t nt = count(got, ",") + 1;
    if (nt < 5 || nt > 8)
      fail_msg("range %g..%g: %zu ticks [%s]", r[0], r[1], nt, got);
    free(svg2);
  }
}

static void test_fixed_range(void **state) {
  (void)state;
  static const double y97[] = {0, 12.5, 97};
  assert_y_ticks(y97, 3, 0, 0, 1, "0,0.2,0.4,0.6,0.8,1");
  assert_y_ticks(y97, 3, 0, -5, 50, "0,10,20,30,40,50");
  assert_y_ticks(y97, 3, 0, 10, 90, "20,40,60,80");
  /* Inside the range only: 0.3 .. 1.7 with step 0.2. */
  assert_y_ticks(y97, 3, 0, 0.3, 1.7, "0.4,0.6,0.8,1,1.2,1.4,1.6");
  /* Invalid pairs are automatic. */
  assert_y_ticks(y97, 3, 0, 5, 5, "0,20,40,60,80,100");
  assert_y_ticks(y97, 3, 0, 5, -5, "0,20,40,60,80,100");
  assert_y_ticks(y97, 3, 0, NAN, 5, "0,20,40,60,80,100");
  /* Log: fixed, and a y_min <= 0 replaced by the data's decade. */
  static const double ylog[] = {3, 30, 300};
  assert_y_ticks(ylog, 3, 1, 1, 1e4, "1,10,100,1k,10k");
  assert_y_ticks(ylog, 3, 1, 0, 1e4, "1,10,100,1k,10k");
  assert_y_ticks(ylog, 3, 1, 20, 80, "20,50");
  /* The points outside a fixed range are drawn (then clipped). */
  sim_chart c = {NULL, NULL, NULL, 0, 0, 1};
  sim_series s = {"s", NULL, y97, 3};
  char *svg = render(&c, &s, 1);
  assert_int_equal(polyline_points(svg), 3);
  assert_non_null(strstr(svg, "clip-path=\"url(#plot-area)\""));
  free(svg);
}

static void test_log_ticks(void **state) {
  (void)state;
  double y[61];
  for (int i = 0; i <= 60; i++)
    y[i] = pow(10.0, i / 10.0);
  y[0] = 1;
  y[60] = 1e6;
  assert_y_ticks(y, 61, 1, 0, 0, "1,10,100,1k,10k,100k,1M");
  /* Not on decades: the enclosing decades. */
  static const double a[] = {3, 700000};
  assert_y_ticks(a, 2, 1, 0, 0, "1,10,100,1k,10k,100k,1M");
  /* Two decades or fewer: 1, 2, 5 labelled. */
  static const double b[] = {1, 50};
  assert_y_ticks(b, 2, 1, 0, 0, "1,2,5,10,20,50,100");
  static const double c[] = {0.02, 0.3};
  assert_y_ticks(c, 2, 1, 0, 0, "0.01,0.02,0.05,0.1,0.2,0.5,1");
  /* Eight labels: every decade; nine or ten: every 2nd; 19: every 5th. */
  static const double d0[] = {1e-3, 1e4};
  assert_y_ticks(d0, 2, 1, 0, 0, "0.001,0.01,0.1,1,10,100,1k,10k");
  static const double d[] = {1e-3, 1e5};
  assert_y_ticks(d, 2, 1, 0, 0, "0.01,1,100,10k");
  static const double e[] = {1e-3, 0.9e6};
  assert_y_ticks(e, 2, 1, 0, 0, "0.01,1,100,10k,1M");
  static const double f[] = {1e-3, 1e15};
  assert_y_ticks(f, 2, 1, 0, 0, "1,100k,10G,1e15");
  static const double g[] = {1e-300, 1e300};
  assert_y_ticks(g, 2, 1, 0, 0,
                 "1e-300,1e-200,1e-100,1,1e100,1e200,1e300");

  /* Minor ticks: 2..9 of each of the 6 decades (6 * 8), unlabelled. */
  sim_chart ch = {NULL, NULL, NULL, 1, 0, 0};
  sim_series s = {"s", NULL, y, 61};
  char *svg = render(&ch, &s, 1);
  assert_int_equal(count(svg, "h-3"), 48);
  assert_int_equal(count(svg, "h-5"), 7);
  free(svg);
}

/* ------------------------------------------------------------------------ */
/* 6. Styles                                                                 */
/* ------------------------------------------------------------------------ */

static void test_styles(void **state) {
  (void)state;
  sim_series s[14];
  for (int i = 0; i < 14; i++)
    s[i] = (sim_series){"n", X5, Y5, 5};
  char *svg = render(NULL, s, 14);
  check_well_formed(svg);
  char styles[14][96];
  const char *p = svg;
  for (int i = 0; i < 14; i++) {
    p = strstr(p, "<g class=\"series\"");
    assert_non_null(p);
    const char *q = strchr(p, '>');
    const char *st = strstr(p, " stroke=\"");
    assert_true(st != NULL && st < q);
    size_t k = (size_t)(q - st);
    assert_true(k < sizeof styles[i]);
    memcpy(styles[i], st, k);
    styles[i][k] = '\0';
    for (int j = 0; j < i; j++)
      assert_string_not_equal(styles[i], styles[j]);
    p = q;
  }
  /* The second eight are dashed, with square markers. */
  assert_null(strstr(styles[7], "dasharray"));
  assert_non_null(strstr(styles[8], "stroke-dasharray=\"6,3\""));
  assert_int_equal(count(svg, "h5.5v5.5h-5.5z"), 6 * 5 + 6);
  free(svg);
}

/* ------------------------------------------------------------------------ */
/* 7. Files and errors                                                       */
/* ------------------------------------------------------------------------ */

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  assert_true(n >= 0);
  rewind(f);
  char *p = malloc((size_t)n + 1);
  assert_non_null(p);
  assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
  p[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return p;
}

static void test_file(void **state) {
  (void)state;
  size_t n1, n2;
  char *want = sample(&n1);
  const char *path = tmp_path("chart.svg");
  /* Replaces what was there. */
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs("old content, longer than nothing", f);
  fclose(f);

  sim_chart c;
  const sim_series *s;
  sample_input(&c, &s);
  char err[256] = "";
  assert_int_equal(sim_svg_lines(path, &c, s, 5, err, sizeof err), 0);
  char *got = read_all(path, &n2);
  assert_int_equal(n1, n2);
  assert_memory_equal(want, got, n1);
  free(got);
  free(want);

  /* An XML parser accepts it, when python3 is there. */
  if (system("python3 -c 'import xml.dom.minidom' >/dev/null 2>&1") == 0) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import xml.dom.minidom,sys; "
             "xml.dom.minidom.parse(sys.argv[1])' '%s'",
             path);
    assert_int_equal(system(cmd), 0);
    /* And a harder one: escapes, bad bytes, 20 series, an empty one. */
    const char *path2 = tmp_path("hard.svg");
    sim_series h[20];
    for (int i = 0; i < 20; i++)
      h[i] = (sim_series){i % 2 ? "x<&>\"'\x01\xff\xc3\xa9" : NULL, s[i % 5].x,
                          s[i % 5].y, i == 7 ? 0 : 200};
    sim_chart hc = {"<&>\"'", "\x02", "\xe2\x82", 0, 0, 0};
    assert_int_equal(sim_svg_lines(path2, &hc, h, 20, err, sizeof err), 0);
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import xml.dom.minidom,sys; "
             "xml.dom.minidom.parse(sys.argv[1])' '%s'",
             path2);
    assert_int_equal(system(cmd), 0);
  } else {
    print_message("python3 not found: XML parser check skipped\n");
  }
}

static void test_errors(void **state) {
  (void)state;
  sim_series s = {"s", X5, Y5, 5};
  char err[256] = "";
  char path[700];

  snprintf(path, sizeof path, "%s/no/such/dir/x.svg", tmpdir);
  assert_int_equal(sim_svg_lines(path, NULL, &s, 1, err, sizeof err), -1);
  char want[800];
  snprintf(want, sizeof want, "cannot write %s: No such file or directory",
           path);
  assert_string_equal(err, want);

  /* A directory. */
  assert_int_equal(sim_svg_lines(tmpdir, NULL, &s, 1, err, sizeof err), -1);
  snprintf(want, sizeof want, "cannot write %s: ", tmpdir);
  assert_true(strncmp(err, want, strlen(want)) == 0);

  /* Truncated message; no message at all. */
  char small[8];
  assert_int_equal(sim_svg_lines(path, NULL, &s, 1, small, sizeof small), -1);
  assert_string_equal(small, "cannot ");
  assert_int_equal(sim_svg_lines(path, NULL, &s, 1, NULL, 0), -1);

  /* Bad arguments. */
  char *out = (char *)"junk";
  size_t len = 7;
  sim_series bad[2] = {{"ok", NULL, NULL, 0}, {"bad", X5, NULL, 5}};
  assert_int_equal(sim_svg_lines_buf(&out, &len, NULL, bad, 2, err,
                                     sizeof err), -1);
  assert_string_equal(err, "series 1: y is NULL");
  assert_null(out);
  assert_int_equal(len, 0);
  assert_int_equal(sim_svg_lines_buf(NULL, &len, NULL, &s, 1, err,
                                     sizeof err), -1);
  assert_string_equal(err, "invalid arguments");
  out = (char *)"junk";
  len = 7;
  assert_int_equal(sim_svg_lines_buf(&out, &len, NULL, NULL, 1, err,
                                     sizeof err), -1);
  assert_string_equal(err, "invalid arguments");
  assert_null(out);
  assert_int_equal(len, 0);
  assert_int_equal(sim_svg_lines(NULL, NULL, &s, 1, err, sizeof err), -1);
  assert_int_equal(access(path, F_OK), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_structure),
      cmocka_unit_test(test_empty_chart),
      cmocka_unit_test(test_legend_limit),
      cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_long_names),
      cmocka_unit_test(test_deterministic),
      cmocka_unit_test(test_nan_skipped),
      cmocka_unit_test(test_extremes),
      cmocka_unit_test(test_linear_ticks),
      cmocka_unit_test(test_fixed_range),
      cmocka_unit_test(test_log_ticks),
      cmocka_unit_test(test_styles),
      cmocka_unit_test(test_file),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
