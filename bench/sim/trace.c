/* Request traces for the fleet simulator: a hand-written parser for the
 * Mooncake JSONL schema, the file loader, and the prefix-cache reuse
 * ceilings (see trace.h).
 *
 * The parser reads exactly one JSON object a line. It is strict about JSON
 * syntax (RFC 8259: whitespace, strings and their escapes, numbers, the
 * literals, nesting) with two exceptions: bytes >= 0x80 in strings are
 * taken as they are (UTF-8 is not validated) and \u escapes are checked
 * for four hex digits but not for surrogate pairing. Unknown keys are
 * skipped whatever their value; values nested deeper than SKIP_DEPTH_MAX
 * are refused. A line is atomic: on error nothing is appended.
 *
 * Costs: parsing is linear in the line; sim_trace_load is linear in the
 * file plus an O(n log n) stable merge sort (skipped when the file is
 * already in order, as the Mooncake traces are); the reuse ceilings are
 * O(total blocks) expected time (one hash lookup and one O(1) list move
 * per block) and O(min(capacity, total blocks)) memory.
 * SPDX-License-Identifier: MIT */
#include "trace.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SKIP_DEPTH_MAX 128 /* nesting allowed inside ignored values */
#define KEY_MAX 16         /* longest key we compare, with its NUL */
#define LOAD_CHUNK 65536   /* initial read buffer of sim_trace_load */

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */


void sim_set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Growth by doubling, with the byte count checked. */
static int grow(void **p, size_t *cap, size_t elem, size_t first) {
  size_t ncap = *cap ? *cap : first;
  if (*cap) {
    if (ncap > SIZE_MAX / 2 / elem)
      return -1;
    ncap *= 2;
  }
  if (ncap > SIZE_MAX / elem)
    return -1;
  void *np = realloc(*p, ncap * elem);
  if (np == NULL)
    return -1;
  *p = np;
  *cap = ncap;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Line parser                                                               */
/* ------------------------------------------------------------------------ */

#define PARSE_OOM (-2) /* internal: allocation failed (not the line's fault) */

typedef struct parser {
  const char *s;
  size_t len, pos;
  char *err;
  size_t errlen;
} parser;

enum { K_TIMESTAMP, K_INPUT, K_OUTPUT, K_HASH, K_N };
static const char *const key_names[K_N] = {"timestamp", "input_length",
                                           "output_length", "hash_ids"};

static int peek(const parser *p) {
  return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static int is_ws(int c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_ws(parser *p) {
  while (p->pos < p->len && is_ws((unsigned char)p->s[p->pos]))
    p->pos++;
}

static int is_digit(int c) { return c >= '0' && c <= '9'; }

/* A syntax error, with the 1-based byte column where it was found. */
static int fail_at(parser *p, const char *what) {
  sim_set_err(p->err, p->errlen, "%s at column %zu", what, p->pos + 1);
  return -1;
}

static int hex_val(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* The string starting at p->pos (a '"'). With key != NULL, its decoded
 * text goes there when it is plain ASCII without NUL and fits in KEY_MAX
 * bytes; otherwise key is "" (no known key is long or non-ASCII). */
static int scan_string(parser *p, char *key) {
  size_t start = p->pos, n = 0;
  int keep = key != NULL;
  p->pos++;
  for (;;) {
    if (p->pos >= p->len) {
      p->pos = start;
      return fail_at(p, "unterminated string");
    }
    unsigned c = (unsigned char)p->s[p->pos];
    if (c == '"') {
      p->pos++;
      break;
    }
    if (c < 0x20)
      return fail_at(p, "control character in string");
    p->pos++;
    unsigned out = c;
    if (c == '\\') {
      int e = peek(p);
      switch (e) {
      case '"': case '\\': case '/': out = (unsigned)e; break;
      case 'b': out = '\b'; break;
      case 'f': out = '\f'; break;
      case 'n': out = '\n'; break;
      case 'r': out = '\r'; break;
      case 't': out = '\t'; break;
      case 'u':
        out = 0;
        for (size_t i = 1; i <= 4; i++) {
          int h = p->pos + i < p->len
                      ? hex_val((unsigned char)p->s[p->pos + i])
                      : -1;
          if (h < 0) {
            p->pos--;
            return fail_at(p, "invalid \\u escape in string");
          }
          out = out * 16 + (unsigned)h;
        }
        p->pos += 4;
        break;
      default:
        p->pos--;
        return fail_at(p, "invalid escape in string");
      }
      p->pos++;
    }
    if (keep) {
      if (out == 0 || out >= 0x80 || n + 1 >= KEY_MAX)
        keep = 0;
      else
        key[n++] = (char)out;
    }
  }
  if (key != NULL)
    key[keep ? n : 0] = '\0';
  return 0;
}

static int is_num_char(int c) {
  return is_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' ||
         c == 'E';
}

/* A JSON number token, split in its parts. */
typedef struct numtok {
  int neg, has_frac, has_exp, exp_neg;
  const char *ip, *fp, *ep; /* integer, fraction, exponent digits */
  size_t il, fl, el;
} numtok;

/* The longest run of characters that can belong to a number starting at
 * p->pos: what the value is if it is not one of the other JSON kinds. */
static size_t number_run(const parser *p) {
  size_t e = p->pos;
  while (e < p->len && is_num_char((unsigned char)p->s[e]))
    e++;
  return e - p->pos;
}

/* 1 if s[0..n) is exactly a JSON number (RFC 8259 grammar), else 0. */
static int json_number(const char *s, size_t n, numtok *t) {
  size_t i = 0;
  memset(t, 0, sizeof *t);
  if (i < n && s[i] == '-') {
    t->neg = 1;
    i++;
  }
  t->ip = s + i;
  if (i < n && s[i] == '0') {
    i++;
  } else {
    if (i >= n || !is_digit((unsigned char)s[i]))
      return 0;
    while (i < n && is_digit((unsigned char)s[i]))
      i++;
  }
  t->il = (size_t)(s + i - t->ip);
  if (i < n && s[i] == '.') {
    i++;
    t->has_frac = 1;
    t->fp = s + i;
    while (i < n && is_digit((unsigned char)s[i]))
      i++;
    t->fl = (size_t)(s + i - t->fp);
    if (t->fl == 0)
      return 0;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    t->has_exp = 1;
    if (i < n && (s[i] == '+' || s[i] == '-'))
      t->exp_neg = s[i++] == '-';
    t->ep = s + i;
    while (i < n && is_digit((unsigned char)s[i]))
      i++;
    t->el = (size_t)(s + i - t->ep);
    if (t->el == 0)
      return 0;
  }
  return i == n;
}

/* A non-negative JSON integer (no sign, fraction or exponent) <= max:
 * 0, -1 if s[0..n) is not one, -2 if it is larger than max. */
static int parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out) {
  numtok t;
  if (!json_number(s, n, &t) || t.neg || t.has_frac || t.has_exp)
    return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < t.il; i++) {
    uint64_t d = (uint64_t)(t.ip[i] - '0');
    if (v > (max - d) / 10)
      return -2;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

/* A non-negative JSON number of milliseconds as nanoseconds, rounded to
 * the nearest (halves up), computed exactly on the decimal digits (no
 * floating point): 0, -1 if not a non-negative number, -2 if the result
 * does not fit in 64 bits. */
#define DIGITS_CAP 1000000000 /* exponents saturate, longer mantissas fail */
static int parse_ms_to_ns(const char *s, size_t n, uint64_t *out) {
  numtok t;
  if (!json_number(s, n, &t) || t.neg)
    return -1;
  if (t.il > DIGITS_CAP || t.fl > DIGITS_CAP)
    return -2;
  int64_t e = 0;
  for (size_t i = 0; i < t.el; i++)
    if (e < DIGITS_CAP)
      e = e * 10 + (t.ep[i] - '0');
  if (t.exp_neg)
    e = -e;
  /* The digits D = integer digits then fraction digits; digit i weighs
   * 10^(il - 1 - i + e + 6) ns. k digits weigh at least 1 ns; digit k, if
   * any, decides the rounding. */
  size_t nd = t.il + t.fl;
  int64_t k = (int64_t)t.il + e + 6;
  uint64_t v = 0;
#define DIGIT(i) ((uint64_t)((i) < t.il ? t.ip[(i)] - '0' : t.fp[(i) - t.il] - '0'))
  if (k > 0) {
    size_t kk = (uint64_t)k < nd ? (size_t)k : nd;
    for (size_t i = 0; i < kk; i++) {
      uint64_t d = DIGIT(i);
      if (v > (UINT64_MAX - d) / 10)
        return -2;
      v = v * 10 + d;
    }
    for (int64_t z = k - (int64_t)kk; z > 0 && v != 0; z--) {
      if (v > UINT64_MAX / 10)
        return -2;
      v *= 10;
    }
  }
  if (k >= 0 && (uint64_t)k < nd && DIGIT((size_t)k) >= 5) {
    if (v == UINT64_MAX)
      return -2;
    v++;
  }
#undef DIGIT
  *out = v;
  return 0;
}

/* Skips one JSON value of any kind at p->pos (whitespace skipped). */
static int skip_value(parser *p, int depth) {
  skip_ws(p);
  int c = peek(p);
  if (c == '"')
    return scan_string(p, NULL);
  if (c == '{' || c == '[') {
    int close = c == '{' ? '}' : ']';
    if (depth >= SKIP_DEPTH_MAX)
      return fail_at(p, "value nested too deeply");
    p->pos++;
    skip_ws(p);
    if (peek(p) == close) {
      p->pos++;
      return 0;
    }
    for (;;) {
      skip_ws(p);
      if (c == '{') {
        if (peek(p) != '"')
          return fail_at(p, "expected a key string");
        if (scan_string(p, NULL) < 0)
          return -1;
        skip_ws(p);
        if (peek(p) != ':')
          return fail_at(p, "expected ':'");
        p->pos++;
      }
      if (skip_value(p, depth + 1) < 0)
        return -1;
      skip_ws(p);
      int d = peek(p);
      if (d == close) {
        p->pos++;
        return 0;
      }
      if (d != ',')
        return fail_at(p, c == '{' ? "expected ',' or '}'"
                                   : "expected ',' or ']'");
      p->pos++;
    }
  }
  if (c == '-' || is_digit(c)) {
    numtok t;
    size_t n = number_run(p);
    if (!json_number(p->s + p->pos, n, &t))
      return fail_at(p, "invalid number");
    p->pos += n;
    return 0;
  }
  static const char *const lits[] = {"true", "false", "null"};
  for (size_t i = 0; i < 3; i++) {
    size_t l = strlen(lits[i]);
    if (p->len - p->pos >= l && memcmp(p->s + p->pos, lits[i], l) == 0) {
      p->pos += l;
      return 0;
    }
  }
  return fail_at(p, c < 0 ? "expected a value" : "invalid value");
}

/* hash_ids: appended to t->blocks (the caller rolls back on error). */
static int parse_hash_ids(parser *p, sim_trace *t, uint32_t *count) {
  if (peek(p) != '[') {
    sim_set_err(p->err, p->errlen, "hash_ids is not an array");
    return -1;
  }
  p->pos++;
  skip_ws(p);
  *count = 0;
  if (peek(p) == ']') {
    p->pos++;
    return 0;
  }
  for (size_t i = 0;; i++) {
    skip_ws(p);
    if (i > 0 && peek(p) == ']')
      return fail_at(p, "trailing comma in hash_ids");
    size_t n = number_run(p);
    uint64_t id = 0;
    int rc = parse_uint(p->s + p->pos, n, UINT64_MAX, &id);
    if (rc == -1) {
      sim_set_err(p->err, p->errlen,
              "hash_ids[%zu] is not a non-negative integer", i);
      return -1;
    }
    if (rc == -2) {
      sim_set_err(p->err, p->errlen, "hash_ids[%zu] is out of range (max %llu)",
              i, (unsigned long long)UINT64_MAX);
      return -1;
    }
    if (*count == UINT32_MAX) {
      sim_set_err(p->err, p->errlen, "hash_ids has more than %lu entries",
              (unsigned long)UINT32_MAX);
      return -1;
    }
    if (t->n_blocks == t->cap_blocks &&
        grow((void **)&t->blocks, &t->cap_blocks, sizeof *t->blocks, 1024) <
            0) {
      sim_set_err(p->err, p->errlen, "out of memory");
      return PARSE_OOM;
    }
    t->blocks[t->n_blocks++] = id;
    (*count)++;
    p->pos += n;
    skip_ws(p);
    int c = peek(p);
    if (c == ']') {
      p->pos++;
      return 0;
    }
    if (c != ',')
      return fail_at(p, "expected ',' or ']' in hash_ids");
    p->pos++;
  }
}

/* The object; its blocks are appended as they come, the request at the
 * end. The caller rolls t->n_blocks back on error. */
static int parse_object(parser *p, sim_trace *t) {
  int seen[K_N] = {0};
  sim_req r;
  memset(&r, 0, sizeof r);
  r.blocks_off = t->n_blocks;
  if (peek(p) != '{')
    return fail_at(p, "expected '{'");
  p->pos++;
  skip_ws(p);
  if (peek(p) == '}') {
    p->pos++;
  } else {
    for (;;) {
      char key[KEY_MAX];
      skip_ws(p);
      if (peek(p) != '"')
        return fail_at(p, "expected a key string");
      if (scan_string(p, key) < 0)
        return -1;
      skip_ws(p);
      if (peek(p) != ':')
        return fail_at(p, "expected ':' after the key");
      p->pos++;
      skip_ws(p);
      int k = 0;
      while (k < K_N && strcmp(key, key_names[k]) != 0)
        k++;
      if (k < K_N && seen[k]) {
        sim_set_err(p->err, p->errlen, "duplicate key %s", key_names[k]);
        return -1;
      }
      if (k == K_TIMESTAMP) {
        size_t n = number_run(p);
        int rc = parse_ms_to_ns(p->s + p->pos, n, &r.arrival_ns);
        if (rc == -1) {
          sim_set_err(p->err, p->errlen, "timestamp is not a non-negative number");
          return -1;
        }
        if (rc == -2) {
          sim_set_err(p->err, p->errlen, "timestamp is out of range (max %llu ns)",
                  (unsigned long long)UINT64_MAX);
          return -1;
        }
        p->pos += n;
      } else if (k == K_INPUT || k == K_OUTPUT) {
        size_t n = number_run(p);
        uint64_t v = 0;
        int rc = parse_uint(p->s + p->pos, n, UINT32_MAX, &v);
        if (rc == -1) {
          sim_set_err(p->err, p->errlen, "%s is not a non-negative integer",
                  key_names[k]);
          return -1;
        }
        if (rc == -2) {
          sim_set_err(p->err, p->errlen, "%s is out of range (max %lu)",
                  key_names[k], (unsigned long)UINT32_MAX);
          return -1;
        }
        if (k == K_INPUT)
          r.input_tokens = (uint32_t)v;
        else
          r.output_tokens = (uint32_t)v;
        p->pos += n;
      } else if (k == K_HASH) {
        int rc = parse_hash_ids(p, t, &r.n_blocks);
        if (rc < 0)
          return rc;
      } else if (skip_value(p, 0) < 0) {
        return -1;
      }
      if (k < K_N)
        seen[k] = 1;
      skip_ws(p);
      int c = peek(p);
      if (c == '}') {
        p->pos++;
        break;
      }
      if (c != ',')
        return fail_at(p, "expected ',' or '}'");
      p->pos++;
    }
  }
  skip_ws(p);
  if (p->pos != p->len) {
    sim_set_err(p->err, p->errlen, "trailing characters after the object");
    return -1;
  }
  for (int k = 0; k < K_N; k++) {
    if (!seen[k]) {
      sim_set_err(p->err, p->errlen, "missing key %s", key_names[k]);
      return -1;
    }
  }
  if (t->n == t->cap &&
      grow((void **)&t->req, &t->cap, sizeof *t->req, 64) < 0) {
    sim_set_err(p->err, p->errlen, "out of memory");
    return PARSE_OOM;
  }
  t->req[t->n++] = r;
  return 0;
}

/* sim_trace_parse_line with out of memory told apart (PARSE_OOM). */
static int parse_line(sim_trace *t, const char *line, size_t len, char *err,
                      size_t errlen) {
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (len == 0)
    return 1;
  parser p = {line, len, 0, err, errlen};
  skip_ws(&p);
  if (p.pos == len)
    return 1;
  size_t saved = t->n_blocks;
  int rc = parse_object(&p, t);
  if (rc < 0)
    t->n_blocks = saved;
  return rc;
}

int sim_trace_parse_line(sim_trace *t, const char *line, size_t len,
                         char *err, size_t errlen) {
  int rc = parse_line(t, line, len, err, errlen);
  return rc < 0 ? -1 : rc;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

/* Stable bottom-up merge sort of t->req by arrival_ns: O(n log n) time,
 * n extra entries; nothing to do (O(n) check) when already in order. */
int sim_trace_sort(sim_trace *t) {
  size_t n = t->n, i;
  for (i = 1; i < n; i++)
    if (t->req[i].arrival_ns < t->req[i - 1].arrival_ns)
      break;
  if (i >= n)
    return 0;
  sim_req *tmp = malloc(n * sizeof *tmp);
  if (tmp == NULL)
    return -1;
  sim_req *src = t->req, *dst = tmp;
  for (size_t w = 1; w < n; w = w > n / 2 ? n : 2 * w) {
    for (size_t lo = 0; lo < n; lo += 2 * w) {
      size_t mid = lo + w < n ? lo + w : n;
      size_t hi = mid + w < n ? mid + w : n;
      size_t a = lo, b = mid, o = lo;
      while (a < mid && b < hi)
        dst[o++] = src[b].arrival_ns < src[a].arrival_ns ? src[b++] : src[a++];
      while (a < mid)
        dst[o++] = src[a++];
      while (b < hi)
        dst[o++] = src[b++];
      if (hi == n)
        break;
    }
    sim_req *s = src;
    src = dst;
    dst = s;
  }
  if (src != t->req)
    memcpy(t->req, src, n * sizeof *src);
  free(tmp);
  return 0;
}

int sim_trace_load(sim_trace *t, const char *path, char *err, size_t errlen) {
  memset(t, 0, sizeof *t);
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    sim_set_err(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  char msg[256];
  char *buf = NULL;
  size_t cap = 0, start = 0, end = 0, scanned = 0, line = 0;
  int eof = 0, rc = 0;
  if (grow((void **)&buf, &cap, 1, LOAD_CHUNK) < 0) {
    sim_set_err(err, errlen, "%s: out of memory", path);
    rc = -1;
    goto done;
  }
  for (;;) {
    /* Complete lines in [start, end); scanned: no '\n' before it. */
    char *nl;
    while ((nl = memchr(buf + scanned, '\n', end - scanned)) != NULL) {
      size_t l = (size_t)(nl - (buf + start));
      line++;
      int prc = parse_line(t, buf + start, l, msg, sizeof msg);
      if (prc == PARSE_OOM) {
        sim_set_err(err, errlen, "%s: out of memory", path);
        rc = -1;
        goto done;
      }
      if (prc < 0) {
        sim_set_err(err, errlen, "%s:%zu: %s", path, line, msg);
        rc = -1;
        goto done;
      }
      start = scanned = start + l + 1;
    }
    scanned = end;
    if (eof)
      break;
    if (start > 0) {
      memmove(buf, buf + start, end - start);
      end -= start;
      scanned -= start;
      start = 0;
    }
    if (end == cap && grow((void **)&buf, &cap, 1, LOAD_CHUNK) < 0) {
      sim_set_err(err, errlen, "%s: out of memory", path);
      rc = -1;
      goto done;
    }
    size_t want = cap - end;
    size_t got = fread(buf + end, 1, want, f);
    end += got;
    if (got < want) {
      if (ferror(f)) {
        sim_set_err(err, errlen, "%s: read error: %s", path, strerror(errno));
        rc = -1;
        goto done;
      }
      if (feof(f))
        eof = 1;
    }
  }
  if (start < end) { /* a last line without '\n' */
    line++;
    int prc = parse_line(t, buf + start, end - start, msg, sizeof msg);
    if (prc == PARSE_OOM) {
      sim_set_err(err, errlen, "%s: out of memory", path);
      rc = -1;
    } else if (prc < 0) {
      sim_set_err(err, errlen, "%s:%zu: %s", path, line, msg);
      rc = -1;
    }
  }
  if (rc == 0 && sim_trace_sort(t) < 0) {
    sim_set_err(err, errlen, "%s: out of memory", path);
    rc = -1;
  }
done:
  free(buf);
  fclose(f);
  if (rc < 0)
    sim_trace_free(t);
  return rc;
}

void sim_trace_free(sim_trace *t) {
  if (t == NULL)
    return;
  free(t->req);
  free(t->blocks);
  memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------------ */
/* Reuse ceilings: an LRU of block ids                                       */
/* ------------------------------------------------------------------------ */

/* An LRU set of at most cap block ids: open addressing with linear probing
 * (load <= 1/2, deletion by backward shift, so no tombstones) mapping an
 * id to its node; nodes form an intrusive doubly-linked list from the most
 * (head) to the least (tail) recently used. Lookup, touch and eviction
 * are O(1) expected. */
#define NIL SIZE_MAX

typedef struct lru {
  size_t cap, size, used;
  uint64_t *key;       /* per node */
  size_t *prev, *next; /* per node; NIL at the ends */
  size_t head, tail;
  size_t *slot; /* hash table: a node or NIL */
  size_t mask;
} lru;

static uint64_t mix64(uint64_t x) { /* splitmix64's finalizer */
  x ^= x >> 30;
  x *= UINT64_C(0xbf58476d1ce4e5b9);
  x ^= x >> 27;
  x *= UINT64_C(0x94d049bb133111eb);
  x ^= x >> 31;
  return x;
}

static size_t home(const lru *c, uint64_t k) {
  return (size_t)mix64(k) & c->mask;
}

/* nodes: how many entries can be live at once. */
static int lru_init(lru *c, size_t cap, size_t nodes) {
  memset(c, 0, sizeof *c);
  c->cap = cap;
  c->head = c->tail = NIL;
  size_t tsize = 16;
  while (tsize / 2 < nodes) {
    if (tsize > SIZE_MAX / 2 / sizeof *c->slot)
      return -1;
    tsize *= 2;
  }
  if (nodes > SIZE_MAX / sizeof *c->key)
    return -1;
  c->mask = tsize - 1;
  c->slot = malloc(tsize * sizeof *c->slot);
  c->key = malloc((nodes ? nodes : 1) * sizeof *c->key);
  c->prev = malloc((nodes ? nodes : 1) * sizeof *c->prev);
  c->next = malloc((nodes ? nodes : 1) * sizeof *c->next);
  if (c->slot == NULL || c->key == NULL || c->prev == NULL ||
      c->next == NULL)
    return -1;
  for (size_t i = 0; i < tsize; i++)
    c->slot[i] = NIL;
  return 0;
}

static void lru_free(lru *c) {
  free(c->slot);
  free(c->key);
  free(c->prev);
  free(c->next);
}

/* The node of k or NIL; *at = its slot, or the empty slot ending the
 * probe (where k would go). */
static size_t lru_find(const lru *c, uint64_t k, size_t *at) {
  size_t i = home(c, k);
  for (;;) {
    size_t n = c->slot[i];
    if (n == NIL || c->key[n] == k) {
      *at = i;
      return n;
    }
    i = (i + 1) & c->mask;
  }
}

/* Empties slot i, shifting back the entries of its probe run that may
 * move (their home is not cyclically within (i, j]). */
static void lru_erase_slot(lru *c, size_t i) {
  size_t j = i;
  for (;;) {
    j = (j + 1) & c->mask;
    size_t n = c->slot[j];
    if (n == NIL)
      break;
    size_t h = home(c, c->key[n]);
    if (i < j ? (h <= i || h > j) : (h <= i && h > j)) {
      c->slot[i] = n;
      i = j;
    }
  }
  c->slot[i] = NIL;
}

static void lru_unlink(lru *c, size_t n) {
  if (c->prev[n] != NIL)
    c->next[c->prev[n]] = c->next[n];
  else
    c->head = c->next[n];
  if (c->next[n] != NIL)
    c->prev[c->next[n]] = c->prev[n];
  else
    c->tail = c->prev[n];
}

static void lru_push_front(lru *c, size_t n) {
  c->prev[n] = NIL;
  c->next[n] = c->head;
  if (c->head != NIL)
    c->prev[c->head] = n;
  c->head = n;
  if (c->tail == NIL)
    c->tail = n;
}

/* k becomes the most recently used, inserted if absent (evicting the
 * least recently used when full). */
static void lru_touch(lru *c, uint64_t k) {
  size_t at;
  size_t n = lru_find(c, k, &at);
  if (n != NIL) {
    if (c->head != n) {
      lru_unlink(c, n);
      lru_push_front(c, n);
    }
    return;
  }
  if (c->cap == 0)
    return;
  if (c->size == c->cap) {
    size_t victim = c->tail, vat;
    lru_find(c, c->key[victim], &vat);
    lru_erase_slot(c, vat);
    lru_unlink(c, victim);
    c->size--;
    n = victim;
    lru_find(c, k, &at); /* the shift may have moved the hole */
  } else {
    n = c->used++;
  }
  c->key[n] = k;
  c->slot[at] = n;
  lru_push_front(c, n);
  c->size++;
}

/* The requests in array order (sim_trace_load sorts them by arrival).
 * Within a request the blocks are touched last to first, so its first
 * block ends up the most recent: a prefix's tail is evicted before its
 * head (vLLM frees a request's blocks in that order; SGLang's radix tree
 * evicts leaves first), and a request longer than the cache leaves its
 * leading blocks in it. -1 if out of memory. */
static double reuse(const sim_trace *t, size_t capacity) {
  uint64_t total = 0, hits = 0;
  for (size_t i = 0; i < t->n; i++)
    total += t->req[i].n_blocks;
  if (total == 0)
    return 0.0;
  size_t nodes = capacity < t->n_blocks ? capacity : t->n_blocks;
  lru c;
  if (lru_init(&c, capacity, nodes) < 0) {
    lru_free(&c);
    return -1.0;
  }
  for (size_t i = 0; i < t->n; i++) {
    const uint64_t *b = t->blocks + t->req[i].blocks_off;
    size_t nb = t->req[i].n_blocks, h = 0, at;
    while (h < nb && lru_find(&c, b[h], &at) != NIL)
      h++;
    hits += h;
    for (size_t j = nb; j-- > 0;)
      lru_touch(&c, b[j]);
  }
  lru_free(&c);
  return (double)hits / (double)total;
}

double sim_reuse_infinite(const sim_trace *t) {
  /* Never full: at most t->n_blocks distinct ids. */
  return reuse(t, SIZE_MAX);
}

double sim_reuse_lru(const sim_trace *t, size_t capacity_blocks) {
  return reuse(t, capacity_blocks);
}
