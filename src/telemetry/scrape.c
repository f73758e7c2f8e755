/* ilb_scrape: a streaming reader of the Prometheus text exposition format
 * (0.0.4), feeding the model-server dialects (dialect.c).
 *
 * The host hands over a page in pieces of any size. Whole lines are parsed
 * where they lie in the caller's buffer; only a line cut by the end of a
 * piece is copied, into the one buffer of line_max bytes allocated with the
 * object. Nothing is allocated after ilb_scrape_new, no byte past
 * data + len is read, and every byte is looked at a bounded number of
 * times, so a page costs O(len) whatever it holds.
 *
 * Grammar, as the Prometheus text parser (expfmt) reads it:
 *   line    = blank* ( comment | sample )? "\r"? "\n"
 *   comment = "#" blank* ( ("HELP" | "TYPE") blank+ name (blank+ text)?
 *                        | "EOF" blank* | anything )
 *   sample  = name blank* ( "{" blank* (label blank* ("," blank* label
 *             blank*)* ","?)? blank* "}" )? blank* value (blank+ timestamp)?
 *             blank*
 *   label   = lname blank* "=" blank* '"' ( [^"\\\n] | \\ | \" | \n )* '"'
 * with name = [a-zA-Z_:][a-zA-Z0-9_:]*, lname = [a-zA-Z_][a-zA-Z0-9_]*,
 * blank = space or tab. The value is a number as Go's ParseFloat reads it
 * (NaN, +Inf, -Inf included); the timestamp is a number too (milliseconds
 * in 0.0.4, seconds in OpenMetrics) and is not used. HELP text is not
 * checked (it is not used either). A NUL byte anywhere is an error.
 * SPDX-License-Identifier: MIT */
#include <stddef.h>
#include <string.h>

#include "telemetry/metrics.h"

/* ---- character classes -------------------------------------------------- */

#define C_NAME0 1u  /* [a-zA-Z_:] first byte of a metric name */
#define C_NAME 2u   /* [a-zA-Z0-9_:] */
#define C_LABEL0 4u /* [a-zA-Z_] */
#define C_LABEL 8u  /* [a-zA-Z0-9_] */
#define C_BLANK 16u /* space, tab */
#define C_VSTOP 32u /* '"' '\\' '\r' '\n': where a label value scan stops */
#define C_TEND 64u  /* blank '\r' '\n': where a value or timestamp ends */

#define ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || \
                  (c) == '_')
#define DIGIT(c) ((c) >= '0' && (c) <= '9')
#define CLS(c)                                                               \
  ((ALPHA(c) ? C_NAME0 | C_NAME | C_LABEL0 | C_LABEL : 0u) |                \
   ((c) == ':' ? C_NAME0 | C_NAME : 0u) |                                    \
   (DIGIT(c) ? C_NAME | C_LABEL : 0u) |                                      \
   ((c) == ' ' || (c) == '\t' ? C_BLANK | C_TEND : 0u) |                     \
   ((c) == '"' || (c) == '\\' ? C_VSTOP : 0u) |                              \
   ((c) == '\r' || (c) == '\n' ? C_VSTOP | C_TEND : 0u))
#define CLS4(c) CLS(c), CLS((c) + 1), CLS((c) + 2), CLS((c) + 3)
#define CLS16(c) CLS4(c), CLS4((c) + 4), CLS4((c) + 8), CLS4((c) + 12)
#define CLS64(c) CLS16(c), CLS16((c) + 16), CLS16((c) + 32), CLS16((c) + 48)
static const uint8_t cls[256] = {CLS64(0), CLS64(64), CLS64(128),
                                 CLS64(192)};

#define IS(c, k) (cls[(unsigned char)(c)] & (k))

/* Every line p[0..n) handed to the functions below is followed by a
 * readable '\n' or '\r' at p[n] (its own terminator in the caller's
 * buffer, or one written after it in ours), which is in no class but
 * C_VSTOP and C_TEND: the scanning loops stop there without a bounds
 * check of their own. */

static size_t skip_blanks(const char *p, size_t i) {
  while (p[i] == ' ' || p[i] == '\t') /* no table load: mostly none */
    i++;
  return i;
}

static size_t skip_class(const char *p, size_t i, unsigned k) {
  while (IS(p[i], k))
    i++;
  return i;
}

/* Eight bytes at a time (SWAR), for the long runs: metric names and label
 * values. Only whole words inside the line are loaded (i + 8 <= n); the
 * byte loops above finish the job. */
#define ONES UINT64_C(0x0101010101010101)
#define HIGH UINT64_C(0x8080808080808080)

static uint64_t load8(const char *p) {
  uint64_t w;
  memcpy(&w, p, sizeof w);
  return w;
}

/* Bytes of w equal to c get their high bit set (exact, no false hits). */
static uint64_t eq8(uint64_t w, unsigned c) {
  uint64_t v = w ^ (ONES * c);
  return ~(((v & ~HIGH) + ~HIGH) | v) & HIGH;
}

/* For bytes below 0x80: high bit set where the byte is >= lo. */
static uint64_t ge8(uint64_t w, unsigned lo) {
  return (w + ONES * (0x80 - lo)) & HIGH;
}

/* Are all eight bytes of w in [a-zA-Z0-9_:]? Letters are tested with the
 * case bit set: only [A-Za-z] land in [a-z] then. */
static int all_name8(uint64_t w) {
  if (w & HIGH)
    return 0;
  uint64_t f = w | (ONES * 0x20);
  uint64_t in = (ge8(w, '0') & ~ge8(w, ':' + 1)) |
                (ge8(f, 'a') & ~ge8(f, 'z' + 1)) | eq8(w, '_');
  return in == HIGH;
}

static size_t skip_name(const char *p, size_t i, size_t n) {
  while (i + 8 <= n && all_name8(load8(p + i)))
    i += 8;
  return skip_class(p, i, C_NAME);
}

/* Label value bytes up to the next '"', '\\' or '\r' (or n). */
static size_t skip_value(const char *p, size_t i, size_t n) {
  for (; i + 8 <= n; i += 8) {
    uint64_t w = load8(p + i);
    if (eq8(w, '"') | eq8(w, '\\') | eq8(w, '\r'))
      break;
  }
  while (!IS(p[i], C_VSTOP))
    i++;
  return i;
}

/* If the metric name at p[i] is the last one read, its end; else 0. */
static size_t same_name(const ilb_scrape *s, const char *p, size_t i,
                        size_t n) {
  size_t l = s->last_len;
  if (!l || l > n - i || p[i + l - 1] != s->last_name[l - 1] ||
      IS(p[i + l], C_NAME) || memcmp(p + i, s->last_name, l))
    return 0;
  return i + l;
}

static void remember_name(ilb_scrape *s, const char *name, size_t len,
                          const struct ilb__mdef *def, int def_ok) {
  if (len > sizeof(s->last_name)) {
    s->last_len = 0;
    return;
  }
  memcpy(s->last_name, name, len);
  s->last_len = len;
  s->last_def = def;
  s->last_def_ok = def_ok;
}

/* End of the token at i: the next blank, or n. A '\r' inside the line is
 * part of the token. */
static size_t token_end(const char *p, size_t i, size_t n) {
  for (;;) {
    while (!IS(p[i], C_TEND))
      i++;
    if (i == n || p[i] != '\r')
      return i;
    i++;
  }
}

/* ---- errors and page state ----------------------------------------------- */

static void page_reset(ilb_scrape *s) {
  s->state = ILB__PAGE_OK;
  s->line = 1;
  s->buf_len = 0;
  s->buf_nul = 0;
  s->used = 0;
  s->last_len = 0;
  memset(s->sum, 0, sizeof(s->sum));
  memset(s->n, 0, sizeof(s->n));
  memset(s->nan, 0, sizeof(s->nan));
}

/* Mark the page malformed at the current line. Always returns ILB_EPARSE. */
static int fail(ilb_scrape *s, const char *what) {
  s->state = ILB__PAGE_ERR;
  s->has_err = 1;
  s->err_line = s->line;
  s->err_what = what;
  return ILB_EPARSE;
}

/* ---- lines --------------------------------------------------------------- */


static int type_known(const char *p, size_t n) {
  /* 0.0.4's five, and OpenMetrics' (whose "# EOF" is accepted too). */
  static const char *const types[] = {"counter", "gauge",   "histogram",
                                      "summary", "untyped", "unknown",
                                      "info",    "stateset", "gaugehistogram"};
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
    if (ilb__word_is(p, n, types[i]))
      return 1;
  return 0;
}

static int comment(ilb_scrape *s, const char *p, size_t i, size_t n) {
  i = skip_blanks(p, i + 1); /* past '#' */
  size_t k = token_end(p, i, n);
  int help = k - i == 4 && !memcmp(p + i, "HELP", 4);
  int type = k - i == 4 && !memcmp(p + i, "TYPE", 4);
  if (!help && !type) {
    if (k - i == 3 && !memcmp(p + i, "EOF", 3) && skip_blanks(p, k) == n)
      s->state = ILB__PAGE_EOF;
    return 0; /* any other comment */
  }
  /* Like expfmt: the name may be missing, but not malformed. */
  i = skip_blanks(p, k);
  if (i == n)
    return 0;
  size_t end = same_name(s, p, i, n);
  if (!end) {
    if (!IS(p[i], C_NAME0))
      return fail(s, "bad metric name in comment");
    end = skip_name(p, i + 1, n);
    remember_name(s, p + i, end - i, NULL, 0);
  }
  i = end;
  if (i < n && !IS(p[i], C_BLANK))
    return fail(s, "bad metric name in comment");
  if (help)
    return 0;
  i = skip_blanks(p, i);
  k = token_end(p, i, n);
  if (k > i && (!type_known(p + i, k - i) || skip_blanks(p, k) != n))
    return fail(s, "unknown metric type");
  return 0;
}

/* The label set from p[i] == '{'; *end gets the index past '}'. Label
 * values are checked (escapes) even when nobody reads them. */
static int labels(ilb_scrape *s, struct ilb__sample *smp, const char *p,
                  size_t i, size_t n, size_t *end) {
  i = skip_blanks(p, i + 1);
  for (;;) {
    if (i == n)
      return fail(s, "unterminated label set");
    if (p[i] == '}')
      break;
    if (!IS(p[i], C_LABEL0))
      return fail(s, "bad label name");
    size_t name = i;
    i = skip_class(p, i + 1, C_LABEL);
    size_t name_len = i - name;
    i = skip_blanks(p, i);
    if (i == n || p[i] != '=')
      return fail(s, "expected '=' after label name");
    i = skip_blanks(p, i + 1);
    if (i == n || p[i] != '"')
      return fail(s, "expected '\"' before label value");
    size_t v = ++i;
    int escaped = 0;
    /* Values are short (model names, bucket bounds): scanning them here
     * beats calling memchr for the quote and again for a backslash. */
    for (;;) {
      i = skip_value(p, i, n);
      if (i == n)
        return fail(s, "unterminated label value");
      if (p[i] == '"')
        break;
      if (p[i] == '\\') {
        if (i + 1 == n) /* a backslash ends the line */
          return fail(s, "unterminated label value");
        if (p[i + 1] != '\\' && p[i + 1] != '"' && p[i + 1] != 'n')
          return fail(s, "bad escape in label value");
        escaped = 1;
        i += 2;
      } else {
        i++; /* a '\r' inside the value is just a byte */
      }
    }
    size_t v_end = i;
    if (smp->def)
      ilb__sample_label(s, smp, p + name, name_len, p + v, v_end - v,
                        escaped);
    i = skip_blanks(p, v_end + 1);
    if (i < n && p[i] == ',') {
      i = skip_blanks(p, i + 1); /* a trailing comma is fine */
      continue;
    }
    if (i < n && p[i] == '}')
      break;
    return fail(s, "expected ',' or '}' after label value");
  }
  *end = i + 1;
  return 0;
}

/* The definition of a sample's metric name in the dialect (detecting the
 * dialect on the way), NULL when it reads nothing of it. */
static const struct ilb__mdef *lookup(ilb_scrape *s, const char *name,
                                      size_t len) {
  if (!s->d) { /* auto: the first name with a known prefix decides */
    const struct ilb__dialect *d = ilb__dialect_detect(name, len);
    if (d)
      ilb__scrape_set_dialect(s, d);
  }
  return s->d ? ilb__dialect_find(s->d, name, len) : NULL;
}

static int sample(ilb_scrape *s, const char *p, size_t i, size_t n) {
  size_t name = i;
  const struct ilb__mdef *def;
  i = same_name(s, p, name, n);
  if (i) {
    if (!s->last_def_ok) { /* seen in HELP / TYPE only */
      s->last_def = lookup(s, p + name, i - name);
      s->last_def_ok = 1;
    }
    def = s->last_def;
  } else {
    if (!IS(p[name], C_NAME0))
      return fail(s, "bad metric name");
    i = skip_name(p, name + 1, n);
    def = lookup(s, p + name, i - name);
    remember_name(s, p + name, i - name, def, 1);
  }

  struct ilb__sample smp;
  smp.def = NULL;
  if (def)
    ilb__sample_begin(&smp, def);

  size_t k = skip_blanks(p, i);
  if (k < n && p[k] == '{') {
    int rc = labels(s, &smp, p, k, n, &k);
    if (rc)
      return rc;
    k = skip_blanks(p, k);
  } else if (k == i && k < n) {
    return fail(s, "bad metric name"); /* "foo-bar 1", "foo\"..." */
  }
  if (k == n)
    return fail(s, "missing value");
  size_t v = k;
  k = token_end(p, k, n);
  double value;
  if (ilb__parse_number(p + v, k - v, &value))
    return fail(s, "bad value");
  k = skip_blanks(p, k);
  if (k < n) {
    size_t ts = k;
    double ignored;
    k = token_end(p, k, n);
    if (ilb__parse_number(p + ts, k - ts, &ignored))
      return fail(s, "bad timestamp");
    if (skip_blanks(p, k) != n)
      return fail(s, "unexpected text after timestamp");
  }
  if (smp.def)
    ilb__sample_end(s, &smp, value);
  return 0;
}

/* One line without its '\n'; nul: it holds a NUL byte (found once per
 * feed by ilb_scrape_feed rather than once per line). */
static int line(ilb_scrape *s, const char *p, size_t n, int nul) {
  if (nul)
    return fail(s, "NUL byte");
  if (n && p[n - 1] == '\r')
    n--;
  size_t i = skip_blanks(p, 0);
  int rc = 0;
  if (i < n)
    rc = p[i] == '#' ? comment(s, p, i, n) : sample(s, p, i, n);
  if (!rc)
    s->line++;
  return rc;
}

/* ---- public API ---------------------------------------------------------- */

int ilb_scrape_config_init(ilb_scrape_config *cfg) {
  if (!cfg)
    return ILB_EINVAL;
  memset(cfg, 0, sizeof(*cfg));
  cfg->struct_size = sizeof(*cfg);
  cfg->dialect = ILB_DIALECT_AUTO;
  cfg->line_max = 65536;
  return 0;
}

#define SCRAPE_LINE_MIN 256
#define SCRAPE_LINE_MAX 16777216

int ilb_scrape_new(ilb_scrape **scrape_out, const ilb_scrape_config *cfg,
                   const ilb_host *host) {
  if (!scrape_out)
    return ILB_EINVAL;
  *scrape_out = NULL;
  ilb_scrape_config c;
  ilb_scrape_config_init(&c);
  if (cfg) {
    int rc = ilb__check_struct_in(cfg, cfg->struct_size, sizeof(*cfg),
                                  sizeof(*cfg));
    if (rc)
      return rc;
    c = *cfg;
  }
  if (c.reserved0 != 0)
    return ILB_EINVAL;
  if (c.dialect != ILB_DIALECT_AUTO && !ilb__dialect_get(c.dialect))
    return ILB_EINVAL;
  ilb_host h;
  int rc = ilb__host_copy(&h, host);
  if (rc)
    return rc;
  if (c.line_max < SCRAPE_LINE_MIN || c.line_max > SCRAPE_LINE_MAX)
    return ILB_ERANGE;
  size_t key_len = c.label_key ? strnlen(c.label_key, ILB_ID_MAX + 1) : 0;
  size_t value_len =
      c.label_value ? strnlen(c.label_value, ILB_ID_MAX + 1) : 0;
  if (key_len > ILB_ID_MAX || value_len > ILB_ID_MAX)
    return ILB_ETOOBIG;

  struct ilb__alloc a = {h.alloc, h.free, h.user_data};
  ilb_scrape *s = ilb__malloc(&a, sizeof(*s) + c.line_max + 1);
  if (!s)
    return ILB_ENOMEM;
  memset(s, 0, sizeof(*s));
  s->a = a;
  s->host = h;
  s->line_max = c.line_max;
  s->buf = (char *)(s + 1);
  s->dialect = ILB_DIALECT_AUTO;
  if (c.label_key) {
    s->has_key = 1;
    memcpy(s->cfg_key, c.label_key, key_len);
    s->cfg_key_len = key_len;
    s->key = s->cfg_key;
    s->key_len = key_len;
  }
  if (c.label_value) {
    s->has_value = 1;
    memcpy(s->value, c.label_value, value_len);
    s->value_len = value_len;
  }
  if (c.dialect != ILB_DIALECT_AUTO)
    ilb__scrape_set_dialect(s, ilb__dialect_get(c.dialect));
  page_reset(s);
  *scrape_out = s;
  return 0;
}

void ilb_scrape_free(ilb_scrape *s) {
  if (!s)
    return;
  struct ilb__alloc a = s->a;
  ilb__free(&a, s);
}

int ilb_scrape_feed(ilb_scrape *s, const char *data, size_t len) {
  if (!s || (!data && len))
    return ILB_EINVAL;
  if (s->state == ILB__PAGE_ERR)
    return ILB_EPARSE;
  if (len == 0 || s->state == ILB__PAGE_EOF)
    return 0;
  const char *p = data, *end = data + len;
  /* The first NUL of this piece: the line holding it is an error (once
   * every line before it has been read, and unless that line is too long,
   * which is reported first however the page is split). */
  const char *nul = memchr(data, '\0', len);
  while (p < end && s->state == ILB__PAGE_OK) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = (size_t)((nl ? nl : end) - p);
    int has_nul = nul && nul >= p && nul < p + n;
    if (nl && s->buf_len == 0) { /* a whole line in the caller's buffer */
      if (n > s->line_max)
        return fail(s, "line too long");
      const char *start = p;
      p = nl + 1;
      if (line(s, start, n, has_nul))
        return ILB_EPARSE;
      continue;
    }
    if (n > s->line_max - s->buf_len)
      return fail(s, "line too long");
    memcpy(s->buf + s->buf_len, p, n);
    s->buf_len += n;
    s->buf_nul |= has_nul;
    if (!nl)
      break;
    p = nl + 1;
    size_t bn = s->buf_len;
    int bnul = s->buf_nul;
    s->buf_len = 0;
    s->buf_nul = 0;
    s->buf[bn] = '\n'; /* the terminator, see skip_blanks */
    if (line(s, s->buf, bn, bnul))
      return ILB_EPARSE;
  }
  return 0;
}

int ilb_scrape_finish(ilb_telemetry *t, ilb_scrape *s, uint64_t timestamp_ns) {
  if (!t || !s)
    return ILB_EINVAL;
  size_t want = t->struct_size;
  if (want < offsetof(ilb_telemetry, present) + sizeof(uint64_t))
    return ILB_ESIZE;
  if (want > sizeof(*t))
    want = sizeof(*t);
  /* A last line without its '\n'. */
  if (s->state == ILB__PAGE_OK && s->buf_len) {
    s->buf[s->buf_len] = '\n';
    line(s, s->buf, s->buf_len, s->buf_nul);
  }
  if (s->state == ILB__PAGE_ERR) {
    page_reset(s); /* dropped; the previous page's counters stay */
    return ILB_EPARSE;
  }
  /* Rates need a time; the record keeps 0 ("now" for the pool that gets
   * the report, whose clock may not be this scrape's host's). */
  uint64_t ts = timestamp_ns ? timestamp_ns : ilb__host_now(&s->host);
  ilb_telemetry v;
  memset(&v, 0, sizeof(v));
  v.struct_size = want;
  v.timestamp_ns = timestamp_ns;
  ilb__dialect_finish(s, ts, &v);
  int found = s->used > 0;
  page_reset(s);
  memcpy(t, &v, want);
  return found ? 0 : ILB_ENOENT;
}

int ilb_telemetry_parse(ilb_telemetry *t, ilb_scrape *s, const char *text,
                        size_t len, uint64_t timestamp_ns) {
  if (!t || !s || (!text && len))
    return ILB_EINVAL;
  /* finish also after a feed error: it drops the page and resets */
  int rc = ilb_scrape_feed(s, text, len);
  int fin = ilb_scrape_finish(t, s, timestamp_ns);
  return rc == ILB_EPARSE ? rc : fin;
}

int ilb_scrape_error(uint64_t *line_out, const char **what_out,
                     const ilb_scrape *s) {
  if (!s)
    return ILB_EINVAL;
  if (!s->has_err)
    return ILB_ENOENT;
  if (line_out)
    *line_out = s->err_line;
  if (what_out)
    *what_out = s->err_what;
  return 0;
}

int ilb_scrape_dialect(int32_t *dialect_out, const ilb_scrape *s) {
  if (!dialect_out || !s)
    return ILB_EINVAL;
  *dialect_out = s->dialect;
  return 0;
}
