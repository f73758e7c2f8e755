/* Line charts as standalone SVG 1.1 (see svg.h for what is drawn).
 *
 * The document is built in one growing buffer, then written in one go.
 * Every number is written by put_num / put_int / tick_label below, never
 * by printf's floating-point conversions, so the output does not depend
 * on the locale (LC_NUMERIC) and is the same bytes for the same input.
 * Tick values are kept exact as an integer mantissa and a power of ten,
 * so labels are exact decimals ("0.3", not "0.30000000000000004").
 *
 * Costs: O(total points) time and output; the axes are O(1) (at most
 * MAX_TICKS ticks, log axes walk at most ~640 decades).
 * SPDX-License-Identifier: MIT */
#include "svg.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Geometry (px). */
#define W 900
#define H 500
#define PL 76              /* plot area: left */
#define PT 44              /* top */
#define PB (H - 58)        /* bottom */
#define PR_LEGEND (W - 206) /* right, with a legend */
#define PR_BARE (W - 24)   /* right, without */
#define CLIP_PAD 6         /* clip rectangle beyond the plot area */
#define COORD_MAX 1e6      /* coordinates are clamped to +-this */
#define LEGEND_MAX 16      /* legend entries */
#define LEGEND_STEP 18     /* px between entries */
#define NAME_MAX_BYTES 24  /* legend names are cut after this */

#define DATA_MAX 1e300  /* data are clamped to +-this for the ranges */
#define TINY 1e-250     /* spans / values below this count as zero */
#define MAX_TICKS 160

#if defined(__GNUC__)
#define SVG_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SVG_PRINTF(f, a)
#endif

SVG_PRINTF(3, 4)
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Output buffer                                                             */
/* ------------------------------------------------------------------------ */

typedef struct buf {
  char *p;
  size_t len, cap;
  int oom;
} buf;

static void put_n(buf *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (n >= b->cap - b->len || b->p == NULL) {
    size_t ncap = b->cap ? b->cap : 8192;
    while (n >= ncap - b->len) {
      if (ncap > SIZE_MAX / 2) {
        b->oom = 1;
        return;
      }
      ncap *= 2;
    }
    char *np = realloc(b->p, ncap);
    if (np == NULL) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = ncap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void put(buf *b, const char *s) { put_n(b, s, strlen(s)); }

static void put_int(buf *b, long long v) {
  char tmp[24];
  size_t i = sizeof tmp;
  unsigned long long u =
      v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  do {
    tmp[--i] = (char)('0' + (int)(u % 10));
    u /= 10;
  } while (u != 0);
  if (v < 0)
    tmp[--i] = '-';
  put_n(b, tmp + i, sizeof tmp - i);
}

/* A coordinate: at most 2 decimals, trailing zeros dropped ("12", "12.5",
 * "-0.25"), clamped to +-COORD_MAX. */
static void put_num(buf *b, double v) {
  if (v != v)
    v = 0;
  if (v > COORD_MAX)
    v = COORD_MAX;
  if (v < -COORD_MAX)
    v = -COORD_MAX;
  long long r = llround(v * 100.0);
  long long a = r < 0 ? -r : r;
  if (r < 0)
    put(b, "-");
  put_int(b, a / 100);
  int f = (int)(a % 100);
  if (f != 0) {
    char tmp[3] = {'.', (char)('0' + f / 10), (char)('0' + f % 10)};
    put_n(b, tmp, f % 10 ? 3 : 2);
  }
}

/* Length of the well-formed UTF-8 sequence (of a character XML allows) at
 * s, or 0. s is NUL-terminated, so the checks stop at its end. */
static size_t utf8_len(const unsigned char *s) {
#define CONT(c) ((c) >= 0x80 && (c) <= 0xBF)
  unsigned c = s[0];
  if (c < 0x80)
    return 1;
  if (c < 0xC2)
    return 0;
  if (c < 0xE0)
    return CONT(s[1]) ? 2 : 0;
  if (c < 0xF0) {
    if (!CONT(s[1]) || !CONT(s[2]))
      return 0;
    if (c == 0xE0 && s[1] < 0xA0)
      return 0; /* overlong */
    if (c == 0xED && s[1] >= 0xA0)
      return 0; /* surrogates */
    if (c == 0xEF && s[1] == 0xBF && (s[2] == 0xBE || s[2] == 0xBF))
      return 0; /* U+FFFE, U+FFFF */
    return 3;
  }
  if (c < 0xF5) {
    if (!CONT(s[1]) || !CONT(s[2]) || !CONT(s[3]))
      return 0;
    if (c == 0xF0 && s[1] < 0x90)
      return 0; /* overlong */
    if (c == 0xF4 && s[1] >= 0x90)
      return 0; /* above U+10FFFF */
    return 4;
  }
  return 0;
#undef CONT
}

/* Text, escaped for XML content and attribute values: at most max_bytes
 * bytes of s (whole characters); 1 if s was cut. Tabs and line breaks
 * become spaces, other control characters and bytes that are not UTF-8
 * "?". */
static int put_text(buf *b, const char *s, size_t max_bytes) {
  const unsigned char *p = (const unsigned char *)s;
  size_t used = 0;
  while (*p) {
    size_t n = utf8_len(p);
    size_t take = n ? n : 1;
    if (used + take > max_bytes)
      return 1;
    used += take;
    if (n == 0) {
      put(b, "?");
    } else if (n > 1) {
      put_n(b, (const char *)p, n);
    } else {
      switch (*p) {
      case '&': put(b, "&amp;"); break;
      case '<': put(b, "&lt;"); break;
      case '>': put(b, "&gt;"); break;
      case '"': put(b, "&quot;"); break;
      case '\'': put(b, "&apos;"); break;
      case '\t':
      case '\n':
      case '\r': put(b, " "); break;
      default:
        if (*p < 0x20)
          put(b, "?");
        else
          put_n(b, (const char *)p, 1);
      }
    }
    p += take;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Axes and ticks                                                            */
/* ------------------------------------------------------------------------ */

typedef struct tick {
  double at;    /* axis coordinate: the value, or log10 of it */
  long long m;  /* the value is m * 10^e, exactly */
  int e;
  int labelled; /* 0: minor tick, no label, no grid line */
} tick;

typedef struct axis {
  double lo, hi; /* axis coordinates (log10 on a log axis), lo < hi */
  int log;
  tick t[MAX_TICKS];
  int nt;
} axis;

static double p10(int e) { return pow(10.0, (double)e); }

/* m * 10^e as a double, rounded once where it can be. */
static double dec_value(long long m, int e) {
  return e >= 0 ? (double)m * p10(e) : (double)m / p10(-e);
}

static void add_tick(axis *a, long long m, int e, int labelled) {
  if (a->nt >= MAX_TICKS)
    return;
  double v = dec_value(m, e);
  tick *t = &a->t[a->nt++];
  t->at = a->log ? log10(v) : v;
  t->m = m;
  t->e = e;
  t->labelled = labelled;
}

/* Largest k with 10^k <= v, smallest k with 10^k >= v (v > 0, finite). */
static int floor_dec(double v) {
  int k = (int)floor(log10(v));
  while (k > -400 && p10(k) > v)
    k--;
  while (k < 400 && p10(k + 1) <= v)
    k++;
  return k;
}

static int ceil_dec(double v) {
  int k = floor_dec(v);
  return p10(k) < v ? k + 1 : k;
}

static double clampd(double v, double lo, double hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

/* A linear axis over data [lo, hi] (finite, lo <= hi; fixed: exactly that
 * range, which is then not degenerate). */
static void lin_axis(axis *a, double lo, double hi, int fixed) {
  static const int ms[3] = {1, 2, 5};
  a->log = 0;
  a->nt = 0;
  double span = hi - lo;
  double mag = fmax(fabs(lo), fabs(hi));
  if (fixed && (span < TINY || span <= mag * 1e-12))
    fixed = 0; /* not reached: build_axes checks */
  if (!fixed && (span < TINY || span <= mag * 1e-9)) {
    double v = lo / 2 + hi / 2;
    if (fabs(v) < TINY) {
      lo = 0;
      hi = 1;
    } else {
      double d = fabs(v) * 0.1;
      lo = v - d;
      hi = v + d;
    }
    span = hi - lo;
  }
  /* The smallest 1-2-5 step giving at most 8 ticks; starting at a step
   * <= span / 10 (>= 10 ticks) makes it the smallest. */
  int e = (int)floor(log10(span / 10.0));
  int mi = 0;
  double k0 = 0, k1 = 0;
  for (int iter = 0; iter < 60; iter++) {
    double s = dec_value(ms[mi], e);
    if (fixed) {
      k0 = ceil(lo / s - 1e-9);
      k1 = floor(hi / s + 1e-9);
    } else {
      k0 = floor(lo / s + 1e-9);
      k1 = ceil(hi / s - 1e-9);
    }
    if (k1 - k0 + 1 <= 8)
      break;
    if (++mi == 3) {
      mi = 0;
      e++;
    }
  }
  long long i0 = (long long)k0, i1 = (long long)k1;
  if (!fixed) {
    /* At least 5 ticks: widen away from zero where the data are on one
     * side of it, else alternately up and down. */
    int up = 1;
    while (i1 - i0 + 1 < 5) {
      if (i0 >= 0)
        i1++;
      else if (i1 <= 0)
        i0--;
      else if (up)
        i1++;
      else
        i0--;
      up = !up;
    }
    a->lo = dec_value(i0 * ms[mi], e);
    a->hi = dec_value(i1 * ms[mi], e);
  } else {
    a->lo = lo;
    a->hi = hi;
  }
  for (long long k = i0; k <= i1 && a->nt < MAX_TICKS; k++)
    add_tick(a, k * ms[mi], e, 1);
}

/* A log axis over positive data [lo, hi] (fixed: exactly that range). */
static void log_axis(axis *a, double lo, double hi, int fixed) {
  a->log = 1;
  a->nt = 0;
  if (fixed) {
    a->lo = log10(lo);
    a->hi = log10(hi);
  } else {
    int d0 = floor_dec(lo), d1 = ceil_dec(hi);
    if (d0 == d1) {
      d0--;
      d1++;
    }
    a->lo = d0;
    a->hi = d1;
  }
  double span = a->hi - a->lo;
  /* Decades k with 10^k in range, and the decades of the 2..9 ticks. */
  double lo_v = pow(10.0, a->lo), hi_v = pow(10.0, a->hi);
  int k_first = ceil_dec(lo_v * (1 - 1e-12));
  int k_last = floor_dec(hi_v * (1 + 1e-12));
  int k_from = floor_dec(lo_v * (1 + 1e-12));
  double eps = 1e-9;
  if (span <= 2 + eps) {
    /* 1, 2 and 5 of each decade labelled, the rest minor. */
    for (int k = k_from; k <= k_last; k++)
      for (int m = 1; m <= 9; m++) {
        double at = log10((double)m) + k;
        if (at < a->lo - eps || at > a->hi + eps)
          continue;
        add_tick(a, m, k, m == 1 || m == 2 || m == 5);
      }
    return;
  }
  /* Every d-th decade labelled, d the smallest 1-2-5 step giving at most
   * 8 labels. */
  long long d = 1;
  static const int ms[3] = {1, 2, 5};
  for (int i = 0; i < 30; i++) {
    d = (long long)ms[i % 3] * (long long)p10(i / 3);
    long long n = 0;
    for (long long k = k_first; k <= k_last; k++)
      if (k % d == 0)
        n++;
    if (n <= 8)
      break;
  }
  int minor = span <= 10 + eps;            /* 2..9: at most 11 * 9 ticks */
  int minor_decades = k_last - k_first <= 60; /* unlabelled decades */
  for (int k = k_from; k <= k_last; k++) {
    if (k >= k_first && (k % d == 0 || minor_decades))
      add_tick(a, 1, k, k % d == 0);
    if (!minor)
      continue;
    for (int m = 2; m <= 9; m++) {
      double at = log10((double)m) + k;
      if (at >= a->lo - eps && at <= a->hi + eps)
        add_tick(a, m, k, 0);
    }
  }
}

/* The label of m * 10^e (see svg.h): exact, shortest. */
static void tick_label(char *out, size_t outlen, long long m, int e) {
  char digits[24], tmp[64];
  size_t o = 0;
  if (m == 0) {
    snprintf(out, outlen, "0");
    return;
  }
  int neg = m < 0;
  unsigned long long u = neg ? 0ULL - (unsigned long long)m
                             : (unsigned long long)m;
  while (u % 10 == 0) {
    u /= 10;
    e++;
  }
  int nd = snprintf(digits, sizeof digits, "%llu", u);
  int E = nd - 1 + e; /* exponent of the leading digit */
  if (neg)
    tmp[o++] = '-';
  if (E >= 15 || E < -6) {
    tmp[o++] = digits[0];
    if (nd > 1) {
      tmp[o++] = '.';
      for (int i = 1; i < nd; i++)
        tmp[o++] = digits[i];
    }
    snprintf(tmp + o, sizeof tmp - o, "e%d", E);
    snprintf(out, outlen, "%s", tmp);
    return;
  }
  static const char sfx[] = " kMGT";
  int p = E >= 3 ? E / 3 : 0;
  e -= 3 * p;
  /* digits * 10^e, 15 >= nd + e >= -5 */
  if (e >= 0) {
    for (int i = 0; i < nd; i++)
      tmp[o++] = digits[i];
    for (int i = 0; i < e; i++)
      tmp[o++] = '0';
  } else if (nd + e > 0) {
    for (int i = 0; i < nd; i++) {
      if (i == nd + e)
        tmp[o++] = '.';
      tmp[o++] = digits[i];
    }
  } else {
    tmp[o++] = '0';
    tmp[o++] = '.';
    for (int i = 0; i < -(nd + e); i++)
      tmp[o++] = '0';
    for (int i = 0; i < nd; i++)
      tmp[o++] = digits[i];
  }
  if (p > 0)
    tmp[o++] = sfx[p];
  tmp[o] = '\0';
  snprintf(out, outlen, "%s", tmp);
}

/* ------------------------------------------------------------------------ */
/* Series styles                                                             */
/* ------------------------------------------------------------------------ */

static const char *const palette[8] = {
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
    "#9467bd", "#8c564b", "#17becf", "#e377c2",
};
static const char *const dashes[4] = {NULL, "6,3", "1.5,2.5", "7,3,1.5,3"};

/* Marker of style st centred on (x, y), as path data. */
static void put_marker(buf *b, int st, double x, double y) {
  switch (st) {
  case 0: /* circle, r 3 */
    put(b, "M");
    put_num(b, x - 3);
    put(b, ",");
    put_num(b, y);
    put(b, "a3,3 0 1,0 6,0a3,3 0 1,0 -6,0");
    break;
  case 1: /* square, 5.5 */
    put(b, "M");
    put_num(b, x - 2.75);
    put(b, ",");
    put_num(b, y - 2.75);
    put(b, "h5.5v5.5h-5.5z");
    break;
  case 2: /* triangle */
    put(b, "M");
    put_num(b, x);
    put(b, ",");
    put_num(b, y - 3.75);
    put(b, "l3.75,6.25h-7.5z");
    break;
  default: /* diamond */
    put(b, "M");
    put_num(b, x);
    put(b, ",");
    put_num(b, y - 3.75);
    put(b, "l3.75,3.75l-3.75,3.75l-3.75,-3.75z");
    break;
  }
}

static void put_style(buf *b, size_t i) {
  put(b, " stroke=\"");
  put(b, palette[i % 8]);
  put(b, "\"");
  const char *d = dashes[(i / 8) % 4];
  if (d != NULL) {
    put(b, " stroke-dasharray=\"");
    put(b, d);
    put(b, "\"");
  }
}

/* ------------------------------------------------------------------------ */
/* The document                                                              */
/* ------------------------------------------------------------------------ */

typedef struct frame {
  axis x, y;
  double pr; /* plot area right edge */
} frame;

static double px_x(const frame *f, double v) {
  return PL + (v - f->x.lo) / (f->x.hi - f->x.lo) * (f->pr - PL);
}

static double px_y(const frame *f, double v) {
  return PB - (v - f->y.lo) / (f->y.hi - f->y.lo) * (PB - PT);
}

/* Point j of series s in axis coordinates; 0 if it is not drawn. */
static int point(const sim_series *s, size_t j, int log_y, double *x,
                 double *y) {
  double xv = s->x ? s->x[j] : (double)j;
  double yv = s->y[j];
  if (!isfinite(xv) || !isfinite(yv) || (log_y && yv <= 0))
    return 0;
  *x = clampd(xv, -DATA_MAX, DATA_MAX);
  *y = log_y ? log10(yv) : clampd(yv, -DATA_MAX, DATA_MAX);
  return 1;
}

static void build_axes(frame *f, const sim_chart *c, const sim_series *s,
                       size_t ns) {
  int log_y = c->log_y != 0;
  double xmin = INFINITY, xmax = -INFINITY;
  double ymin = INFINITY, ymax = -INFINITY; /* values, not logs */
  for (size_t i = 0; i < ns; i++)
    for (size_t j = 0; j < s[i].n; j++) {
      double x, y;
      if (!point(&s[i], j, log_y, &x, &y))
        continue;
      double yv = log_y ? clampd(s[i].y[j], 1e-300, DATA_MAX) : y;
      xmin = fmin(xmin, x);
      xmax = fmax(xmax, x);
      ymin = fmin(ymin, yv);
      ymax = fmax(ymax, yv);
    }
  int have = xmin <= xmax;
  if (have)
    lin_axis(&f->x, xmin, xmax, 0);
  else
    lin_axis(&f->x, 0, 1, 0);

  int fixed = c->y_max > c->y_min && isfinite(c->y_min) &&
              isfinite(c->y_max);
  if (!log_y) {
    double lo = clampd(c->y_min, -DATA_MAX, DATA_MAX);
    double hi = clampd(c->y_max, -DATA_MAX, DATA_MAX);
    double span = hi - lo;
    /* Too narrow to tick (or to tell apart from one value): automatic. */
    if (fixed && (span < TINY || span <= fmax(fabs(lo), fabs(hi)) * 1e-12))
      fixed = 0;
    if (fixed)
      lin_axis(&f->y, lo, hi, 1);
    else if (have)
      lin_axis(&f->y, ymin, ymax, 0);
    else
      lin_axis(&f->y, 0, 1, 0);
    return;
  }
  if (fixed && c->y_max > 0) {
    double lo = c->y_min;
    double hi = fmin(c->y_max, DATA_MAX);
    if (!(lo > 0)) {
      lo = p10(floor_dec(have ? fmin(ymin, hi) : hi));
      if (lo >= hi)
        lo = hi / 10;
    }
    lo = fmax(lo, 1e-300);
    if (log10(hi) - log10(lo) > 1e-9) {
      log_axis(&f->y, lo, hi, 1);
      return;
    }
  }
  if (have)
    log_axis(&f->y, ymin, ymax, 0);
  else
    log_axis(&f->y, 1, 10, 0);
}

static void put_attr_num(buf *b, const char *name, double v) {
  put(b, " ");
  put(b, name);
  put(b, "=\"");
  put_num(b, v);
  put(b, "\"");
}

static void put_ticks(buf *b, const frame *f) {
  /* Grid lines at labelled ticks. */
  put(b, "<g stroke=\"#e6e6e6\" stroke-width=\"1\" fill=\"none\">\n"
         "<path d=\"");
  for (int i = 0; i < f->x.nt; i++)
    if (f->x.t[i].labelled) {
      put(b, "M");
      put_num(b, px_x(f, f->x.t[i].at));
      put(b, ",");
      put_int(b, PT);
      put(b, "V");
      put_int(b, PB);
    }
  for (int i = 0; i < f->y.nt; i++)
    if (f->y.t[i].labelled) {
      put(b, "M");
      put_int(b, PL);
      put(b, ",");
      put_num(b, px_y(f, f->y.t[i].at));
      put(b, "H");
      put_num(b, f->pr);
    }
  put(b, "\"/>\n</g>\n");

  /* Axis lines and tick marks (minor ones shorter). */
  put(b, "<g stroke=\"#333\" stroke-width=\"1\" fill=\"none\">\n<path d=\"M");
  put_int(b, PL);
  put(b, ",");
  put_int(b, PT);
  put(b, "V");
  put_int(b, PB);
  put(b, "H");
  put_num(b, f->pr);
  for (int i = 0; i < f->x.nt; i++) {
    put(b, "M");
    put_num(b, px_x(f, f->x.t[i].at));
    put(b, ",");
    put_int(b, PB);
    put(b, f->x.t[i].labelled ? "v5" : "v3");
  }
  for (int i = 0; i < f->y.nt; i++) {
    put(b, "M");
    put_int(b, PL);
    put(b, ",");
    put_num(b, px_y(f, f->y.t[i].at));
    put(b, f->y.t[i].labelled ? "h-5" : "h-3");
  }
  put(b, "\"/>\n</g>\n");

  char label[64];
  put(b, "<g class=\"x-labels\" font-size=\"11\" text-anchor=\"middle\" "
         "fill=\"#333\">\n");
  for (int i = 0; i < f->x.nt; i++) {
    const tick *t = &f->x.t[i];
    if (!t->labelled)
      continue;
    tick_label(label, sizeof label, t->m, t->e);
    put(b, "<text");
    put_attr_num(b, "x", px_x(f, t->at));
    put_attr_num(b, "y", PB + 18);
    put(b, ">");
    put(b, label);
    put(b, "</text>\n");
  }
  put(b, "</g>\n<g class=\"y-labels\" font-size=\"11\" text-anchor=\"end\" "
         "fill=\"#333\">\n");
  for (int i = 0; i < f->y.nt; i++) {
    const tick *t = &f->y.t[i];
    if (!t->labelled)
      continue;
    tick_label(label, sizeof label, t->m, t->e);
    put(b, "<text");
    put_attr_num(b, "x", PL - 8);
    put_attr_num(b, "y", px_y(f, t->at) + 4);
    put(b, ">");
    put(b, label);
    put(b, "</text>\n");
  }
  put(b, "</g>\n");
}

static void put_series(buf *b, const frame *f, const sim_series *s,
                       size_t i, int log_y) {
  size_t n_drawn = 0;
  for (size_t j = 0; j < s->n; j++) {
    double x, y;
    n_drawn += (size_t)point(s, j, log_y, &x, &y);
  }
  put(b, "<g class=\"series\" fill=\"none\" stroke-width=\"1.75\" "
         "stroke-linejoin=\"round\"");
  put_style(b, i);
  put(b, ">\n");
  if (n_drawn > 0) {
    /* One polyline per run of drawable points. */
    int open = 0;
    for (size_t j = 0; j < s->n; j++) {
      double x, y;
      if (!point(s, j, log_y, &x, &y)) {
        if (open)
          put(b, "\"/>\n");
        open = 0;
        continue;
      }
      put(b, open ? " " : "<polyline points=\"");
      open = 1;
      put_num(b, px_x(f, x));
      put(b, ",");
      put_num(b, px_y(f, y));
    }
    if (open)
      put(b, "\"/>\n");
    put(b, "<path stroke=\"none\" fill=\"");
    put(b, palette[i % 8]);
    put(b, "\" d=\"");
    for (size_t j = 0; j < s->n; j++) {
      double x, y;
      if (point(s, j, log_y, &x, &y))
        put_marker(b, (int)((i / 8) % 4), px_x(f, x), px_y(f, y));
    }
    put(b, "\"/>\n");
  }
  put(b, "</g>\n");
}

static void put_series_name(buf *b, const sim_series *s, size_t i,
                            size_t max_bytes, int *cut) {
  if (s->name != NULL) {
    int c = put_text(b, s->name, max_bytes);
    if (cut != NULL)
      *cut = c;
    return;
  }
  put(b, "series ");
  put_int(b, (long long)(i + 1));
  if (cut != NULL)
    *cut = 0;
}

static void put_legend(buf *b, const frame *f, const sim_series *s,
                       size_t ns) {
  double x0 = f->pr + 18;
  put(b, "<g class=\"legend\" font-size=\"12\" fill=\"#222\">\n");
  size_t shown = ns < LEGEND_MAX ? ns : LEGEND_MAX;
  for (size_t i = 0; i < shown; i++) {
    double y = PT + 6 + (double)(i * LEGEND_STEP);
    int cut = 0;
    put(b, "<g class=\"entry\">");
    if (s[i].name != NULL && strlen(s[i].name) > NAME_MAX_BYTES) {
      put(b, "<title>");
      put_series_name(b, &s[i], i, SIZE_MAX, NULL);
      put(b, "</title>");
    }
    put(b, "<path fill=\"none\" stroke-width=\"1.75\"");
    put_style(b, i);
    put(b, " d=\"M");
    put_num(b, x0);
    put(b, ",");
    put_num(b, y);
    put(b, "h28\"/><path stroke=\"none\" fill=\"");
    put(b, palette[i % 8]);
    put(b, "\" d=\"");
    put_marker(b, (int)((i / 8) % 4), x0 + 14, y);
    put(b, "\"/><text");
    put_attr_num(b, "x", x0 + 36);
    put_attr_num(b, "y", y + 4);
    put(b, ">");
    put_series_name(b, &s[i], i, NAME_MAX_BYTES, &cut);
    if (cut)
      put(b, "...");
    put(b, "</text></g>\n");
  }
  if (ns > shown) {
    put(b, "<text");
    put_attr_num(b, "x", x0);
    put_attr_num(b, "y", PT + 10 + (double)(shown * LEGEND_STEP));
    put(b, ">+");
    put_int(b, (long long)(ns - shown));
    put(b, " more</text>\n");
  }
  put(b, "</g>\n");
}

static void render(buf *b, const sim_chart *c, const sim_series *s,
                   size_t ns) {
  frame *f = calloc(1, sizeof *f);
  if (f == NULL) {
    b->oom = 1;
    return;
  }
  f->pr = ns > 0 ? PR_LEGEND : PR_BARE;
  build_axes(f, c, s, ns);

  put(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
         "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" "
         "width=\"");
  put_int(b, W);
  put(b, "\" height=\"");
  put_int(b, H);
  put(b, "\" viewBox=\"0 0 ");
  put_int(b, W);
  put(b, " ");
  put_int(b, H);
  put(b, "\" font-family=\"sans-serif\">\n");
  if (c->title != NULL) {
    put(b, "<title>");
    put_text(b, c->title, SIZE_MAX);
    put(b, "</title>\n");
  }
  put(b, "<defs><clipPath id=\"plot-area\"><rect");
  put_attr_num(b, "x", PL - CLIP_PAD);
  put_attr_num(b, "y", PT - CLIP_PAD);
  put_attr_num(b, "width", f->pr - PL + 2 * CLIP_PAD);
  put_attr_num(b, "height", PB - PT + 2 * CLIP_PAD);
  put(b, "/></clipPath></defs>\n"
         "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n");

  put_ticks(b, f);

  if (c->title != NULL) {
    put(b, "<text class=\"title\" x=\"");
    put_int(b, W / 2);
    put(b, "\" y=\"26\" font-size=\"16\" font-weight=\"bold\" "
           "text-anchor=\"middle\" fill=\"#111\">");
    put_text(b, c->title, SIZE_MAX);
    put(b, "</text>\n");
  }
  if (c->xlabel != NULL) {
    put(b, "<text class=\"xlabel\"");
    put_attr_num(b, "x", (PL + f->pr) / 2);
    put_attr_num(b, "y", H - 14);
    put(b, " font-size=\"13\" text-anchor=\"middle\" fill=\"#111\">");
    put_text(b, c->xlabel, SIZE_MAX);
    put(b, "</text>\n");
  }
  if (c->ylabel != NULL) {
    double ym = (PT + PB) / 2.0;
    put(b, "<text class=\"ylabel\" x=\"18\"");
    put_attr_num(b, "y", ym);
    put(b, " transform=\"rotate(-90 18 ");
    put_num(b, ym);
    put(b, ")\" font-size=\"13\" text-anchor=\"middle\" fill=\"#111\">");
    put_text(b, c->ylabel, SIZE_MAX);
    put(b, "</text>\n");
  }

  put(b, "<g clip-path=\"url(#plot-area)\">\n");
  for (size_t i = 0; i < ns; i++)
    put_series(b, f, &s[i], i, c->log_y != 0);
  put(b, "</g>\n");

  if (ns > 0)
    put_legend(b, f, s, ns);
  put(b, "</svg>\n");
  free(f);
}

int sim_svg_lines_buf(char **out, size_t *len, const sim_chart *c,
                      const sim_series *s, size_t n_series, char *err,
                      size_t errlen) {
  if (out != NULL)
    *out = NULL;
  if (len != NULL)
    *len = 0;
  if (out == NULL || len == NULL || (s == NULL && n_series > 0)) {
    set_err(err, errlen, "invalid arguments");
    return -1;
  }
  for (size_t i = 0; i < n_series; i++)
    if (s[i].n > 0 && s[i].y == NULL) {
      set_err(err, errlen, "series %zu: y is NULL", i);
      return -1;
    }
  static const sim_chart none = {NULL, NULL, NULL, 0, 0, 0};
  buf b = {NULL, 0, 0, 0};
  render(&b, c != NULL ? c : &none, s, n_series);
  if (b.oom) {
    free(b.p);
    set_err(err, errlen, "out of memory");
    return -1;
  }
  *out = b.p;
  *len = b.len;
  return 0;
}

int sim_svg_lines(const char *path, const sim_chart *c, const sim_series *s,
                  size_t n_series, char *err, size_t errlen) {
  if (path == NULL) {
    set_err(err, errlen, "invalid arguments");
    return -1;
  }
  char *text;
  size_t len;
  if (sim_svg_lines_buf(&text, &len, c, s, n_series, err, errlen) != 0)
    return -1;
  FILE *fp = fopen(path, "wb");
  if (fp == NULL) {
    set_err(err, errlen, "cannot write %s: %s", path, strerror(errno));
    free(text);
    return -1;
  }
  int bad = fwrite(text, 1, len, fp) != len;
  int saved = errno;
  if (fclose(fp) != 0 && !bad) {
    bad = 1;
    saved = errno;
  }
  free(text);
  if (bad) {
    set_err(err, errlen, "cannot write %s: %s", path,
            saved ? strerror(saved) : "I/O error");
    remove(path);
    return -1;
  }
  return 0;
}
