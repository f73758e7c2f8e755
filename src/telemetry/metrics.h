/* Internal interface between the /metrics line parser (scrape.c), the
 * decimal reader (number.c) and the model-server dialects (dialect.c).
 * Not installed.
 * SPDX-License-Identifier: MIT */
#ifndef ILB_METRICS_METRICS_H
#define ILB_METRICS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* ---- numbers (number.c) ------------------------------------------------- */

/* Read one whole token as a Prometheus sample value: a decimal number
 * ([+-]digits[.digits][e[+-]digits], ".5" and "1." too), Inf / Infinity
 * with an optional sign, or NaN (any case). Independent of the C locale.
 * Correctly rounded for up to 19 significant digits (down to 1e-290),
 * else within one unit in the last place; exponents of any length
 * saturate (1e999999999 is +Inf, 1e-999999999 is 0). 0 on success, -1 when
 * the token is not such a number. */
int ilb__parse_number(const char *p, size_t n, double *out);

/* Case-insensitive: does p[0..n) equal the lower-case word w? */
int ilb__word_is(const char *p, size_t n, const char *w);

/* ---- the values a dialect collects ------------------------------------- */

/* One slot per (server, metric) the dialects read. A page adds every
 * sample that passes the label filter to its slot; ilb_scrape_finish turns
 * the slots into ilb_telemetry. The set is fixed, so the per-page state is
 * a few fixed arrays, never allocated. */
enum ilb__mslot {
  /* vLLM */
  ILB__M_VLLM_WAITING,
  ILB__M_VLLM_RUNNING,
  ILB__M_VLLM_KV,             /* kv_cache_usage_perc */
  ILB__M_VLLM_KV_OLD,         /* gpu_cache_usage_perc (before 0.10) */
  ILB__M_VLLM_PFX_HITS,       /* counters, in tokens */
  ILB__M_VLLM_PFX_QUERIES,
  ILB__M_VLLM_PFX_HITS_OLD,   /* gpu_prefix_cache_* (before 0.10) */
  ILB__M_VLLM_PFX_QUERIES_OLD,
  ILB__M_VLLM_PFX_RATE_V0,    /* gpu_prefix_cache_hit_rate gauge (v0) */
  ILB__M_VLLM_GEN_TOKENS,     /* counter */
  ILB__M_VLLM_TTFT_SUM,       /* histogram _sum and _count (counters) */
  ILB__M_VLLM_TTFT_COUNT,
  ILB__M_VLLM_BLOCK_SIZE,     /* cache_config_info labels */
  ILB__M_VLLM_GPU_BLOCKS,
  /* SGLang */
  ILB__M_SGL_WAITING,
  ILB__M_SGL_RUNNING,
  ILB__M_SGL_TOKEN_USAGE,
  ILB__M_SGL_HIT_RATE,
  ILB__M_SGL_GEN_TPUT,
  ILB__M_SGL_TTFT_SUM,
  ILB__M_SGL_TTFT_COUNT,
  /* llama.cpp */
  ILB__M_LCPP_RUNNING,
  ILB__M_LCPP_WAITING,
  ILB__M_LCPP_GEN_TPS,
  ILB__M_LCPP_KV_RATIO, /* builds before May 2025 only */
  /* Triton */
  ILB__M_NV_GPU_UTIL,
  ILB__M_NV_MEM_TOTAL,
  ILB__M_NV_MEM_USED,
  ILB__M_NV_QUEUE_US,         /* counter */
  ILB__M_NV_SUCCESS,          /* counter */
  ILB__M_NV_TRT_ACTIVE,       /* nv_trt_llm_request_metrics{request_type} */
  ILB__M_NV_TRT_WAITING,
  ILB__M_NV_TRT_MAX,
  ILB__M_NV_KV_MAX,           /* nv_trt_llm_kv_cache_block_metrics{...} */
  ILB__M_NV_KV_USED,
  ILB__M_NV_KV_TOKENS_PER,
  ILB__M_NV_KV_FRACTION,
  /* TGI */
  ILB__M_TGI_WAITING,
  ILB__M_TGI_RUNNING,
  ILB__M_COUNT
};

/* How a metric name is read. */
enum ilb__mkind {
  ILB__MK_PLAIN = 0,  /* the sample value goes to .slot */
  ILB__MK_SELECT = 1, /* the value goes to the slot that the value of the
                         label .key picks among .sel */
  ILB__MK_INFO = 2    /* the sample value is ignored; the labels named in
                         .sel hold numbers (as strings) for their slots */
};

struct ilb__msel {
  const char *name; /* label value (SELECT) or label name (INFO) */
  uint8_t len;
  uint8_t slot;
};

#define ILB__INFO_MAX 2 /* labels one INFO metric reads */

struct ilb__mdef {
  const char *name; /* full metric name, prefix included */
  uint8_t len;
  uint8_t kind;            /* enum ilb__mkind */
  uint8_t slot;            /* PLAIN */
  uint8_t n_sel;           /* SELECT, INFO */
  const char *key;         /* SELECT: the label that selects */
  uint8_t key_len;
  const struct ilb__msel *sel;
};

struct ilb__dialect {
  int32_t id;             /* enum ilb_dialect */
  const char *prefix;     /* every name it reads starts with this */
  uint8_t prefix_len;
  const char *model_label; /* default label_key; NULL = one model */
  const struct ilb__mdef *defs;
  size_t n_defs;
};

/* The dialect with this id (not AUTO), or NULL. */
const struct ilb__dialect *ilb__dialect_get(int32_t id);
/* The dialect whose prefix starts name, or NULL (for auto-detection). */
const struct ilb__dialect *ilb__dialect_detect(const char *name, size_t len);
/* The definition of name in d, or NULL when d does not read it. */
const struct ilb__mdef *ilb__dialect_find(const struct ilb__dialect *d,
                                          const char *name, size_t len);

/* ---- the parser object --------------------------------------------------- */

#define ILB__PAGE_OK 0
#define ILB__PAGE_EOF 1 /* "# EOF" seen: the rest of the page is ignored */
#define ILB__PAGE_ERR 2 /* malformed: the rest is ignored, finish fails */

struct ilb_scrape {
  struct ilb__alloc a;
  ilb_host host; /* for its clock */
  int32_t dialect; /* in use: as configured or detected, AUTO until then */
  const struct ilb__dialect *d; /* NULL until known */
  size_t line_max;

  /* Label filter, copied at ilb_scrape_new. key is the configured key or,
   * once the dialect is known, its model label; the filter is on when both
   * key and value are known. */
  int has_key, has_value, filter_on;
  const char *key; /* cfg_key or the dialect's model label */
  size_t key_len;
  size_t cfg_key_len, value_len;
  char cfg_key[ILB_ID_MAX + 1];
  char value[ILB_ID_MAX + 1];

  /* The page being read. */
  int state;      /* ILB__PAGE_* */
  uint64_t line;  /* 1-based number of the line being read */
  size_t buf_len; /* bytes of a line split between feeds, in buf */
  int buf_nul;    /* and they hold a NUL byte */
  uint64_t used;  /* samples that went to a slot */
  /* The last metric name read (HELP, TYPE and every bucket of a histogram
   * repeat it): the same bytes again need no check and no lookup. */
  size_t last_len; /* 0: none */
  const struct ilb__mdef *last_def;
  int last_def_ok; /* last_def was looked up (samples only) */
  char last_name[128];
  double sum[ILB__M_COUNT];
  uint64_t n[ILB__M_COUNT];
  uint8_t nan[ILB__M_COUNT]; /* a NaN sample: the slot is unknown */

  /* The previous page's counters. */
  double prev[ILB__M_COUNT];
  uint8_t prev_ok[ILB__M_COUNT];
  uint64_t prev_ts;
  int prev_ts_ok;

  /* The last parse error. */
  int has_err;
  uint64_t err_line;
  const char *err_what;

  char *buf; /* line_max bytes, allocated with the object */
};

/* ---- per-sample accumulation (dialect.c) -------------------------------- */

/* What one sample line of a metric the dialect reads contributes; filled
 * while its labels are read, applied at its end. */
struct ilb__sample {
  const struct ilb__mdef *def;
  int slot; /* PLAIN and SELECT: -1 until known */
  int skip; /* the label filter rejected it */
  int n_info;
  int info_slot[ILB__INFO_MAX];
  double info_val[ILB__INFO_MAX];
};

void ilb__sample_begin(struct ilb__sample *smp, const struct ilb__mdef *def);
/* One label of the sample: name, raw value (between the quotes, escapes
 * not undone, already checked) and whether it holds an escape. */
void ilb__sample_label(const struct ilb_scrape *s, struct ilb__sample *smp,
                       const char *name, size_t name_len, const char *raw,
                       size_t raw_len, int escaped);
void ilb__sample_end(struct ilb_scrape *s, const struct ilb__sample *smp,
                     double value);

/* The dialect is now d (detected or configured): resolve the filter key. */
void ilb__scrape_set_dialect(struct ilb_scrape *s,
                             const struct ilb__dialect *d);

/* Turn the page's slots into *t (ILB_SIGNAL_* clamped to their ranges),
 * using and then replacing the previous page's counters; ts is the page's
 * time (rates divide by the time since the previous page). */
void ilb__dialect_finish(struct ilb_scrape *s, uint64_t ts, ilb_telemetry *t);

#endif
