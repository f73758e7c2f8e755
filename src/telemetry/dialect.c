/* Model-server dialects: which metric names each server exports, which
 * telemetry signal each one feeds, how the series of one metric combine,
 * and the counters that become rates or interval means.
 *
 * Names were checked against the servers' own sources and docs:
 *   vLLM      vllm/v1/metrics/loggers.py (PrometheusStatLogger; the
 *             gpu_cache_usage_perc / gpu_prefix_cache_* names were
 *             deprecated in 0.9 and hidden from 0.10; prometheus_client
 *             appends _total to counters); cache_config_info is an
 *             info-style gauge whose labels are CacheConfig's fields.
 *   SGLang    python/sglang/srt/metrics/collector.py, docs
 *             references/production_metrics.md.
 *   llama.cpp tools/server (the /metrics handler). kv_cache_usage_ratio
 *             and kv_cache_tokens existed until ggml-org/llama.cpp#13660
 *             (May 2025) removed them; current builds have no KV-cache
 *             gauge, so kv_cache_usage is filled for llama.cpp only from an
 *             older build's kv_cache_usage_ratio (KV cells used / n_ctx),
 *             never invented from other metrics.
 *   Triton    docs/user_guide/metrics.md (nv_inference_*, nv_gpu_*), and
 *             tensorrtllm_backend custom_metrics_reporter.cc:
 *             nv_trt_llm_request_metrics{request_type = active | max |
 *             scheduled | context | waiting (newer)},
 *             nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type = max |
 *             free | used | tokens_per | alloc_total | alloc_new | reused |
 *             fraction (newer)}, each with labels model and version.
 *   TGI       docs/source/reference/metrics.md.
 *
 * Series of one metric combine by SUM for counts, bytes, blocks and
 * throughput (requests of every engine / data-parallel rank / model add
 * up) and by MEAN for fractions (KV usage, GPU utilisation, hit rates) and
 * for sizes that are the same everywhere (KV block size).
 * SPDX-License-Identifier: MIT */
#include <math.h>
#include <stddef.h>

#include "telemetry/metrics.h"

#define S(lit) lit, (uint8_t)(sizeof(lit) - 1)
#define PLAIN(name, slot) {S(name), ILB__MK_PLAIN, slot, 0, NULL, 0, NULL}
#define SELECT(name, key, tab)                                               \
  {S(name), ILB__MK_SELECT, 0, (uint8_t)(sizeof(tab) / sizeof(tab[0])),      \
   S(key), tab}
#define INFO(name, tab)                                                      \
  {S(name), ILB__MK_INFO, 0, (uint8_t)(sizeof(tab) / sizeof(tab[0])), NULL, \
   0, tab}

/* ---- slot properties ---------------------------------------------------- */

/* Counters: kept from page to page, read as differences. */
static const uint8_t is_counter[ILB__M_COUNT] = {
    [ILB__M_VLLM_PFX_HITS] = 1,     [ILB__M_VLLM_PFX_QUERIES] = 1,
    [ILB__M_VLLM_PFX_HITS_OLD] = 1, [ILB__M_VLLM_PFX_QUERIES_OLD] = 1,
    [ILB__M_VLLM_GEN_TOKENS] = 1,   [ILB__M_VLLM_TTFT_SUM] = 1,
    [ILB__M_VLLM_TTFT_COUNT] = 1,   [ILB__M_SGL_TTFT_SUM] = 1,
    [ILB__M_SGL_TTFT_COUNT] = 1,    [ILB__M_NV_QUEUE_US] = 1,
    [ILB__M_NV_SUCCESS] = 1,
};

/* MEAN over the series (else SUM). */
static const uint8_t is_mean[ILB__M_COUNT] = {
    [ILB__M_VLLM_KV] = 1,         [ILB__M_VLLM_KV_OLD] = 1,
    [ILB__M_VLLM_PFX_RATE_V0] = 1, [ILB__M_VLLM_BLOCK_SIZE] = 1,
    [ILB__M_SGL_TOKEN_USAGE] = 1, [ILB__M_SGL_HIT_RATE] = 1,
    [ILB__M_NV_GPU_UTIL] = 1,     [ILB__M_NV_KV_TOKENS_PER] = 1,
    [ILB__M_NV_KV_FRACTION] = 1,
};

/* ---- vLLM --------------------------------------------------------------- */

static const struct ilb__msel vllm_cache_info[] = {
    {S("block_size"), ILB__M_VLLM_BLOCK_SIZE},     /* tokens per block */
    {S("num_gpu_blocks"), ILB__M_VLLM_GPU_BLOCKS}, /* "None" is ignored */
};
_Static_assert(sizeof(vllm_cache_info) / sizeof(vllm_cache_info[0]) <=
                   ILB__INFO_MAX,
               "ILB__INFO_MAX");

/* The unsuffixed counter names are what an exporter other than
 * prometheus_client may print; a page never has both spellings. */
static const struct ilb__mdef vllm_defs[] = {
    PLAIN("vllm:num_requests_waiting", ILB__M_VLLM_WAITING),
    PLAIN("vllm:num_requests_running", ILB__M_VLLM_RUNNING),
    PLAIN("vllm:kv_cache_usage_perc", ILB__M_VLLM_KV),
    PLAIN("vllm:gpu_cache_usage_perc", ILB__M_VLLM_KV_OLD),
    PLAIN("vllm:prefix_cache_hits_total", ILB__M_VLLM_PFX_HITS),
    PLAIN("vllm:prefix_cache_queries_total", ILB__M_VLLM_PFX_QUERIES),
    PLAIN("vllm:prefix_cache_hits", ILB__M_VLLM_PFX_HITS),
    PLAIN("vllm:prefix_cache_queries", ILB__M_VLLM_PFX_QUERIES),
    PLAIN("vllm:gpu_prefix_cache_hits_total", ILB__M_VLLM_PFX_HITS_OLD),
    PLAIN("vllm:gpu_prefix_cache_queries_total", ILB__M_VLLM_PFX_QUERIES_OLD),
    PLAIN("vllm:gpu_prefix_cache_hits", ILB__M_VLLM_PFX_HITS_OLD),
    PLAIN("vllm:gpu_prefix_cache_queries", ILB__M_VLLM_PFX_QUERIES_OLD),
    PLAIN("vllm:gpu_prefix_cache_hit_rate", ILB__M_VLLM_PFX_RATE_V0),
    PLAIN("vllm:generation_tokens_total", ILB__M_VLLM_GEN_TOKENS),
    PLAIN("vllm:generation_tokens", ILB__M_VLLM_GEN_TOKENS),
    PLAIN("vllm:time_to_first_token_seconds_sum", ILB__M_VLLM_TTFT_SUM),
    PLAIN("vllm:time_to_first_token_seconds_count", ILB__M_VLLM_TTFT_COUNT),
    INFO("vllm:cache_config_info", vllm_cache_info),
};

/* ---- SGLang ------------------------------------------------------------- */

static const struct ilb__mdef sglang_defs[] = {
    PLAIN("sglang:num_queue_reqs", ILB__M_SGL_WAITING),
    PLAIN("sglang:num_running_reqs", ILB__M_SGL_RUNNING),
    PLAIN("sglang:token_usage", ILB__M_SGL_TOKEN_USAGE),
    PLAIN("sglang:cache_hit_rate", ILB__M_SGL_HIT_RATE),
    PLAIN("sglang:gen_throughput", ILB__M_SGL_GEN_TPUT),
    PLAIN("sglang:time_to_first_token_seconds_sum", ILB__M_SGL_TTFT_SUM),
    PLAIN("sglang:time_to_first_token_seconds_count", ILB__M_SGL_TTFT_COUNT),
};

/* ---- llama.cpp ---------------------------------------------------------- */

static const struct ilb__mdef llamacpp_defs[] = {
    PLAIN("llamacpp:requests_processing", ILB__M_LCPP_RUNNING),
    PLAIN("llamacpp:requests_deferred", ILB__M_LCPP_WAITING),
    PLAIN("llamacpp:predicted_tokens_seconds", ILB__M_LCPP_GEN_TPS),
    PLAIN("llamacpp:kv_cache_usage_ratio", ILB__M_LCPP_KV_RATIO),
};

/* ---- Triton ------------------------------------------------------------- */

/* "scheduled" and "context" are this iteration's share of "active". */
static const struct ilb__msel trt_request_types[] = {
    {S("active"), ILB__M_NV_TRT_ACTIVE},
    {S("waiting"), ILB__M_NV_TRT_WAITING},
    {S("max"), ILB__M_NV_TRT_MAX},
};
static const struct ilb__msel trt_kv_types[] = {
    {S("max"), ILB__M_NV_KV_MAX},
    {S("used"), ILB__M_NV_KV_USED},
    {S("tokens_per"), ILB__M_NV_KV_TOKENS_PER},
    {S("fraction"), ILB__M_NV_KV_FRACTION},
};

static const struct ilb__mdef triton_defs[] = {
    PLAIN("nv_gpu_utilization", ILB__M_NV_GPU_UTIL),
    PLAIN("nv_gpu_memory_total_bytes", ILB__M_NV_MEM_TOTAL),
    PLAIN("nv_gpu_memory_used_bytes", ILB__M_NV_MEM_USED),
    PLAIN("nv_inference_queue_duration_us", ILB__M_NV_QUEUE_US),
    PLAIN("nv_inference_request_success", ILB__M_NV_SUCCESS),
    SELECT("nv_trt_llm_request_metrics", "request_type", trt_request_types),
    SELECT("nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type",
           trt_kv_types),
};

/* ---- TGI ---------------------------------------------------------------- */

static const struct ilb__mdef tgi_defs[] = {
    PLAIN("tgi_queue_size", ILB__M_TGI_WAITING),
    PLAIN("tgi_batch_current_size", ILB__M_TGI_RUNNING),
};

#define N(a) (sizeof(a) / sizeof(a[0]))
static const struct ilb__dialect dialects[] = {
    {ILB_DIALECT_VLLM, S("vllm:"), "model_name", vllm_defs, N(vllm_defs)},
    {ILB_DIALECT_SGLANG, S("sglang:"), "model_name", sglang_defs,
     N(sglang_defs)},
    {ILB_DIALECT_LLAMACPP, S("llamacpp:"), NULL, llamacpp_defs,
     N(llamacpp_defs)},
    {ILB_DIALECT_TRITON, S("nv_"), "model", triton_defs, N(triton_defs)},
    {ILB_DIALECT_TGI, S("tgi_"), NULL, tgi_defs, N(tgi_defs)},
};

static const char *const dialect_names[] = {"auto",     "vllm",   "sglang",
                                            "llamacpp", "triton", "tgi"};

const char *ilb_dialect_name(int32_t dialect) {
  return dialect >= 0 && dialect < (int32_t)N(dialect_names)
             ? dialect_names[dialect]
             : NULL;
}

const struct ilb__dialect *ilb__dialect_get(int32_t id) {
  for (size_t i = 0; i < N(dialects); i++)
    if (dialects[i].id == id)
      return &dialects[i];
  return NULL;
}

const struct ilb__dialect *ilb__dialect_detect(const char *name, size_t len) {
  for (size_t i = 0; i < N(dialects); i++)
    if (len >= dialects[i].prefix_len &&
        !memcmp(name, dialects[i].prefix, dialects[i].prefix_len))
      return &dialects[i];
  return NULL;
}

const struct ilb__mdef *ilb__dialect_find(const struct ilb__dialect *d,
                                          const char *name, size_t len) {
  /* The prefix first: a page is mostly other metrics (process_*, python_*,
   * histogram buckets), and most of those fail here or on the length. */
  if (len < d->prefix_len)
    return NULL;
  for (size_t i = 0; i < d->prefix_len; i++) /* short: no memcmp call */
    if (name[i] != d->prefix[i])
      return NULL;
  char last = name[len - 1];
  for (size_t i = 0; i < d->n_defs; i++) {
    const struct ilb__mdef *def = &d->defs[i];
    if (def->len == len && def->name[len - 1] == last &&
        !memcmp(def->name + d->prefix_len, name + d->prefix_len,
                len - d->prefix_len))
      return def;
  }
  return NULL;
}

void ilb__scrape_set_dialect(struct ilb_scrape *s,
                             const struct ilb__dialect *d) {
  s->d = d;
  s->dialect = d->id;
  if (s->has_key) {
    s->key = s->cfg_key;
    s->key_len = s->cfg_key_len;
  } else if (d->model_label) {
    s->key = d->model_label;
    s->key_len = strlen(d->model_label);
  } else {
    s->key = NULL; /* TGI, llama.cpp: one model, nothing to filter */
  }
  s->filter_on = s->has_value && s->key;
}

/* ---- samples ------------------------------------------------------------ */

/* Does the raw (escaped) label value equal the plain string v? */
static int raw_equal(const char *raw, size_t n, int escaped, const char *v,
                     size_t vn) {
  if (!escaped)
    return n == vn && !memcmp(raw, v, n);
  size_t j = 0;
  for (size_t i = 0; i < n; i++, j++) {
    char c = raw[i];
    if (c == '\\') {
      c = raw[++i]; /* the parser checked: \\, \" or \n, never last */
      if (c == 'n')
        c = '\n';
    }
    if (j >= vn || v[j] != c)
      return 0;
  }
  return j == vn;
}

void ilb__sample_begin(struct ilb__sample *smp, const struct ilb__mdef *def) {
  smp->def = def;
  smp->slot = def->kind == ILB__MK_PLAIN ? def->slot : -1;
  smp->skip = 0;
  smp->n_info = 0;
}

void ilb__sample_label(const struct ilb_scrape *s, struct ilb__sample *smp,
                       const char *name, size_t name_len, const char *raw,
                       size_t raw_len, int escaped) {
  const struct ilb__mdef *def = smp->def;
  if (s->filter_on && name_len == s->key_len &&
      !memcmp(name, s->key, name_len) &&
      !raw_equal(raw, raw_len, escaped, s->value, s->value_len))
    smp->skip = 1;
  if (def->kind == ILB__MK_SELECT) {
    if (name_len != def->key_len || memcmp(name, def->key, name_len))
      return;
    for (int i = 0; i < def->n_sel; i++)
      if (raw_equal(raw, raw_len, escaped, def->sel[i].name,
                    def->sel[i].len))
        smp->slot = def->sel[i].slot;
  } else if (def->kind == ILB__MK_INFO) {
    for (int i = 0; i < def->n_sel; i++) {
      double v;
      if (name_len != def->sel[i].len ||
          memcmp(name, def->sel[i].name, name_len))
        continue;
      /* A number, or "None" and the like, which say nothing. */
      if (escaped || smp->n_info >= ILB__INFO_MAX ||
          ilb__parse_number(raw, raw_len, &v) || isnan(v))
        return;
      smp->info_slot[smp->n_info] = def->sel[i].slot;
      smp->info_val[smp->n_info++] = v;
    }
  }
}

static void add(struct ilb_scrape *s, int slot, double v) {
  s->used++;
  if (isnan(v))
    s->nan[slot] = 1;
  else
    s->sum[slot] += v;
  s->n[slot]++;
}

void ilb__sample_end(struct ilb_scrape *s, const struct ilb__sample *smp,
                     double value) {
  if (smp->skip)
    return;
  if (smp->def->kind == ILB__MK_INFO) {
    for (int i = 0; i < smp->n_info; i++)
      add(s, smp->info_slot[i], smp->info_val[i]);
  } else if (smp->slot >= 0) {
    add(s, smp->slot, value);
  }
}

/* ---- the page's telemetry ----------------------------------------------- */

/* The slot's value on this page: 0 when no series had it or one was NaN. */
static int cur(const struct ilb_scrape *s, int slot, double *v) {
  if (!s->n[slot] || s->nan[slot])
    return 0;
  *v = is_mean[slot] ? s->sum[slot] / (double)s->n[slot] : s->sum[slot];
  return 1;
}

/* A counter's increase since the previous page: 0 when it is new, absent,
 * or went down (a restart: this page is a new baseline). */
static int delta(const struct ilb_scrape *s, int slot, double *d) {
  double c;
  if (!cur(s, slot, &c) || !s->prev_ok[slot] || c < s->prev[slot])
    return 0;
  *d = c - s->prev[slot];
  return 1;
}

struct sig_range {
  size_t off;
  double lo, hi;
};
#define R(field, lo, hi) {offsetof(ilb_telemetry, field), lo, hi}
static const struct sig_range ranges[ILB_SIGNAL_COUNT] = {
    [ILB_SIGNAL_REQUESTS_WAITING] = R(requests_waiting, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_REQUESTS_RUNNING] = R(requests_running, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_KV_CACHE_USAGE] = R(kv_cache_usage, 0, 1),
    [ILB_SIGNAL_GPU_UTILIZATION] = R(gpu_utilization, 0, 1),
    [ILB_SIGNAL_GPU_MEMORY_FREE] = R(gpu_memory_free, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_GPU_MEMORY_TOTAL] = R(gpu_memory_total, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_PREFIX_HIT_RATE] = R(prefix_hit_rate, 0, 1),
    [ILB_SIGNAL_GEN_TOKENS_PER_S] = R(gen_tokens_per_s, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_TTFT] = R(ttft_s, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_QUEUE_TIME] = R(queue_time_s, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_REQUEST_RATE] = R(request_rate, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_MAX_CONCURRENCY] = R(max_concurrency, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_MODEL_READY] = R(model_ready, 0, 1),
    [ILB_SIGNAL_KV_BLOCK_SIZE] = R(kv_block_size, 1, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_KV_BLOCKS_TOTAL] = R(kv_blocks_total, 0, ILB_SIGNAL_MAX),
};
#undef R

/* Record signal sig = v, clamped into its range so ilb_replica_report takes
 * it: a KV usage of 1.0001 is 1, +Inf is ILB_SIGNAL_MAX. NaN is left out,
 * and so is a block size below 1 (no clamp would make it true). */
static void set(ilb_telemetry *t, int sig, double v) {
  const struct sig_range *r = &ranges[sig];
  if (isnan(v) || (sig == ILB_SIGNAL_KV_BLOCK_SIZE && v < 1))
    return;
  if (v < r->lo)
    v = r->lo;
  if (v > r->hi)
    v = r->hi;
  memcpy((char *)t + r->off, &v, sizeof(v));
  t->present |= ILB_SIGNAL_BIT(sig);
}

/* Gauge slot straight to a signal. */
static void gauge(ilb_telemetry *t, const struct ilb_scrape *s, int sig,
                  int slot) {
  double v;
  if (cur(s, slot, &v))
    set(t, sig, v);
}

/* Interval mean: d(num) / d(den), when den grew. */
static void ratio(ilb_telemetry *t, const struct ilb_scrape *s, int sig,
                  int num, int den, double scale) {
  double dn, dd;
  if (delta(s, num, &dn) && delta(s, den, &dd) && dd > 0)
    set(t, sig, dn / dd * scale);
}

/* Rate per second over the time since the previous page. */
static void rate(ilb_telemetry *t, const struct ilb_scrape *s, int sig,
                 int slot, double dt) {
  double d;
  if (dt > 0 && delta(s, slot, &d))
    set(t, sig, d / dt);
}

static void vllm(ilb_telemetry *t, const struct ilb_scrape *s, double dt) {
  double v;
  gauge(t, s, ILB_SIGNAL_REQUESTS_WAITING, ILB__M_VLLM_WAITING);
  gauge(t, s, ILB_SIGNAL_REQUESTS_RUNNING, ILB__M_VLLM_RUNNING);
  /* Both are fractions 0..1 despite "perc"; 0.9 to 0.10 print both. */
  if (s->n[ILB__M_VLLM_KV])
    gauge(t, s, ILB_SIGNAL_KV_CACHE_USAGE, ILB__M_VLLM_KV);
  else
    gauge(t, s, ILB_SIGNAL_KV_CACHE_USAGE, ILB__M_VLLM_KV_OLD);
  /* Hits / queries over the interval (both in tokens); the new names when
   * the page has them, else the old counters, else v0's own gauge. */
  if (s->n[ILB__M_VLLM_PFX_HITS] && s->n[ILB__M_VLLM_PFX_QUERIES])
    ratio(t, s, ILB_SIGNAL_PREFIX_HIT_RATE, ILB__M_VLLM_PFX_HITS,
          ILB__M_VLLM_PFX_QUERIES, 1);
  else if (s->n[ILB__M_VLLM_PFX_HITS_OLD] && s->n[ILB__M_VLLM_PFX_QUERIES_OLD])
    ratio(t, s, ILB_SIGNAL_PREFIX_HIT_RATE, ILB__M_VLLM_PFX_HITS_OLD,
          ILB__M_VLLM_PFX_QUERIES_OLD, 1);
  else
    gauge(t, s, ILB_SIGNAL_PREFIX_HIT_RATE, ILB__M_VLLM_PFX_RATE_V0);
  rate(t, s, ILB_SIGNAL_GEN_TOKENS_PER_S, ILB__M_VLLM_GEN_TOKENS, dt);
  ratio(t, s, ILB_SIGNAL_TTFT, ILB__M_VLLM_TTFT_SUM, ILB__M_VLLM_TTFT_COUNT,
        1);
  gauge(t, s, ILB_SIGNAL_KV_BLOCK_SIZE, ILB__M_VLLM_BLOCK_SIZE);
  if (cur(s, ILB__M_VLLM_GPU_BLOCKS, &v)) /* every engine's own cache */
    set(t, ILB_SIGNAL_KV_BLOCKS_TOTAL, v);
}

static void sglang(ilb_telemetry *t, const struct ilb_scrape *s) {
  gauge(t, s, ILB_SIGNAL_REQUESTS_WAITING, ILB__M_SGL_WAITING);
  gauge(t, s, ILB_SIGNAL_REQUESTS_RUNNING, ILB__M_SGL_RUNNING);
  gauge(t, s, ILB_SIGNAL_KV_CACHE_USAGE, ILB__M_SGL_TOKEN_USAGE);
  gauge(t, s, ILB_SIGNAL_PREFIX_HIT_RATE, ILB__M_SGL_HIT_RATE);
  gauge(t, s, ILB_SIGNAL_GEN_TOKENS_PER_S, ILB__M_SGL_GEN_TPUT);
  ratio(t, s, ILB_SIGNAL_TTFT, ILB__M_SGL_TTFT_SUM, ILB__M_SGL_TTFT_COUNT, 1);
}

static void llamacpp(ilb_telemetry *t, const struct ilb_scrape *s) {
  gauge(t, s, ILB_SIGNAL_REQUESTS_RUNNING, ILB__M_LCPP_RUNNING);
  gauge(t, s, ILB_SIGNAL_REQUESTS_WAITING, ILB__M_LCPP_WAITING);
  gauge(t, s, ILB_SIGNAL_GEN_TOKENS_PER_S, ILB__M_LCPP_GEN_TPS);
  gauge(t, s, ILB_SIGNAL_KV_CACHE_USAGE, ILB__M_LCPP_KV_RATIO);
}

static void triton(ilb_telemetry *t, const struct ilb_scrape *s, double dt) {
  double total, used, max, v;
  gauge(t, s, ILB_SIGNAL_GPU_UTILIZATION, ILB__M_NV_GPU_UTIL);
  if (cur(s, ILB__M_NV_MEM_TOTAL, &total)) {
    set(t, ILB_SIGNAL_GPU_MEMORY_TOTAL, total);
    if (cur(s, ILB__M_NV_MEM_USED, &used)) {
      double fr = total - used;
      set(t, ILB_SIGNAL_GPU_MEMORY_FREE, fr < total ? fr : total);
    }
  }
  /* Both counters count every model that passes the filter: mean queue
   * time per successful request, and successful requests per second. */
  ratio(t, s, ILB_SIGNAL_QUEUE_TIME, ILB__M_NV_QUEUE_US, ILB__M_NV_SUCCESS,
        1e-6);
  rate(t, s, ILB_SIGNAL_REQUEST_RATE, ILB__M_NV_SUCCESS, dt);
  gauge(t, s, ILB_SIGNAL_REQUESTS_RUNNING, ILB__M_NV_TRT_ACTIVE);
  gauge(t, s, ILB_SIGNAL_REQUESTS_WAITING, ILB__M_NV_TRT_WAITING);
  gauge(t, s, ILB_SIGNAL_MAX_CONCURRENCY, ILB__M_NV_TRT_MAX);
  /* Used / max blocks over every model's pool; the backend's own
   * "fraction" (newer builds) only when that cannot be computed. */
  if (cur(s, ILB__M_NV_KV_MAX, &max)) {
    set(t, ILB_SIGNAL_KV_BLOCKS_TOTAL, max);
    if (max > 0 && cur(s, ILB__M_NV_KV_USED, &used))
      set(t, ILB_SIGNAL_KV_CACHE_USAGE, used / max);
  }
  if (!(t->present & ILB_SIGNAL_BIT(ILB_SIGNAL_KV_CACHE_USAGE)) &&
      cur(s, ILB__M_NV_KV_FRACTION, &v))
    set(t, ILB_SIGNAL_KV_CACHE_USAGE, v);
  gauge(t, s, ILB_SIGNAL_KV_BLOCK_SIZE, ILB__M_NV_KV_TOKENS_PER);
}

static void tgi(ilb_telemetry *t, const struct ilb_scrape *s) {
  gauge(t, s, ILB_SIGNAL_REQUESTS_WAITING, ILB__M_TGI_WAITING);
  gauge(t, s, ILB_SIGNAL_REQUESTS_RUNNING, ILB__M_TGI_RUNNING);
}

void ilb__dialect_finish(struct ilb_scrape *s, uint64_t ts, ilb_telemetry *t) {
  double dt = s->prev_ts_ok && ts > s->prev_ts
                  ? (double)(ts - s->prev_ts) / 1e9
                  : 0;
  switch (s->dialect) {
  case ILB_DIALECT_VLLM:
    vllm(t, s, dt);
    break;
  case ILB_DIALECT_SGLANG:
    sglang(t, s);
    break;
  case ILB_DIALECT_LLAMACPP:
    llamacpp(t, s);
    break;
  case ILB_DIALECT_TRITON:
    triton(t, s, dt);
    break;
  case ILB_DIALECT_TGI:
    tgi(t, s);
    break;
  default:
    break;
  }
  /* This page's counters are the next one's baseline; one it lacks (or
   * that was NaN) starts over when it comes back. */
  for (int i = 0; i < ILB__M_COUNT; i++) {
    if (!is_counter[i])
      continue;
    s->prev_ok[i] = (uint8_t)cur(s, i, &s->prev[i]);
  }
  s->prev_ts = ts;
  s->prev_ts_ok = 1;
}
