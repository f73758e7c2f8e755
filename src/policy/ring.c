/* ring: ketama-style consistent hashing ring. A replica of weight w owns
 * ILB_OPT_RING_VNODES * w points (scaled down in proportion when the ring
 * would exceed RING_MAX points); a key belongs to the first point at or
 * after its hash, clockwise. Each point is stored in one 64-bit word:
 * its position (the top 44 bits of a hash) above the owner's canonical rank
 * (20 bits), so the sorted array is the ring and equal positions, however
 * unlikely, order by id. A pick is a bucket lookup on the top bits then a
 * binary search inside the bucket: O(log points) at worst, O(1) expected.
 * A full or unavailable owner sends the key clockwise for RING_WALK points,
 * then on in the key's probe order (consistent.h).
 * SPDX-License-Identifier: MIT */
#include "policy/consistent.h"

#define RING_MAX (UINT64_C(1) << 22) /* points, before the one-each floor */
#define RANK_BITS 20
#define RANK_MASK ((UINT64_C(1) << RANK_BITS) - 1)
#define RING_WALK 32
_Static_assert(ILB__SLOTS_MAX <= (1u << RANK_BITS), "ranks fit a point");

struct ring_state {
  struct ilb__horder order;
  uint32_t npts;
  uint32_t shift;   /* bucket of a position: pos >> shift */
  uint64_t *pts;    /* sorted points */
  uint32_t *bucket; /* bucket b's points start at bucket[b]; 2^(64-shift)+1 */
};

static void ring_destroy(void *state, const struct ilb__alloc *a) {
  struct ring_state *s = state;
  ilb__horder_free(&s->order, a);
  ilb__free(a, s->pts);
  ilb__free(a, s->bucket);
  ilb__free(a, s);
}

/* LSD radix sort, 8 bits a pass. */
static void radix_sort(uint64_t *v, uint64_t *tmp, uint32_t n) {
  for (unsigned shift = 0; shift < 64; shift += 8) {
    uint32_t count[257] = {0};
    for (uint32_t i = 0; i < n; i++)
      count[((v[i] >> shift) & 0xff) + 1]++;
    if (count[((v[0] >> shift) & 0xff) + 1] == n)
      continue; /* one digit value: the pass would change nothing */
    for (unsigned d = 0; d < 256; d++)
      count[d + 1] += count[d];
    for (uint32_t i = 0; i < n; i++)
      tmp[count[(v[i] >> shift) & 0xff]++] = v[i];
    memcpy(v, tmp, sizeof(*v) * n);
  }
}

static int ring_build(void **state, const struct ilb__snap *snap,
                      const struct ilb__alloc *a) {
  struct ring_state *s = ilb__calloc(a, 1, sizeof(*s));
  if (!s)
    return ILB_ENOMEM;
  *state = s;
  if (ilb__horder_build(&s->order, snap, a))
    goto oom;
  uint32_t n = snap->n;
  uint64_t total = 0, v = snap->ring_vnodes;
  for (uint32_t i = 0; i < n; i++)
    total += v * snap->cand[i].weight;
  uint64_t npts = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t k = v * snap->cand[i].weight;
    if (total > RING_MAX)
      k = k * RING_MAX / total; /* <= 1e9 * 2^22 < 2^63 */
    npts += k ? k : 1;
  }
  s->npts = (uint32_t)npts; /* <= RING_MAX + n < 2^32 */
  s->pts = ilb__malloc(a, sizeof(uint64_t) * npts);
  uint64_t *tmp = ilb__malloc(a, sizeof(uint64_t) * npts);
  if (!s->pts || !tmp) {
    ilb__free(a, tmp);
    goto oom;
  }
  uint64_t *p = s->pts;
  for (uint32_t r = 0; r < n; r++) {
    const struct ilb__cand *c = &snap->cand[s->order.order[r]];
    uint64_t k = v * c->weight;
    if (total > RING_MAX)
      k = k * RING_MAX / total;
    k += k == 0;
    uint64_t hid = ilb__xxh64(c->id, strlen(c->id), 0);
    for (uint64_t j = 1; j <= k; j++)
      *p++ = (ilb__mix64(hid + j * ILB__GOLDEN) & ~RANK_MASK) | r;
  }
  radix_sort(s->pts, tmp, s->npts);
  ilb__free(a, tmp);
  /* Four to eight points a bucket, about one cache line of points: the
   * bucket table stays small (cache-resident) and a lookup touches one
   * line of points. At least two buckets. */
  unsigned bits = 1;
  while (bits < 24 && (UINT64_C(1) << (bits + 3)) < npts)
    bits++;
  s->shift = 64 - bits;
  uint32_t nb = 1u << bits;
  s->bucket = ilb__malloc(a, sizeof(uint32_t) * (nb + 1));
  if (!s->bucket)
    goto oom;
  for (uint32_t b = 0, i = 0; b <= nb; b++) {
    while (i < s->npts && (s->pts[i] >> s->shift) < b)
      i++;
    s->bucket[b] = i;
  }
  return 0;
oom:
  ring_destroy(s, a);
  *state = NULL;
  return ILB_ENOMEM;
}

static uint32_t ring_choose(const struct ilb__snap *snap,
                            struct ilb__pick_ctx *ctx) {
  uint64_t h;
  uint32_t fallback;
  if (ILB__UNLIKELY(!ilb__key_hash(snap, ctx, &h, &fallback)))
    return fallback;
  const struct ring_state *s = snap->pstate;
  uint64_t key = h & ~RANK_MASK;
  uint32_t b = (uint32_t)(h >> s->shift);
  /* First point >= key in the bucket, else the next bucket's first:
   * branch-free binary search (a conditional move per halving). */
  uint32_t lo = s->bucket[b], len = s->bucket[b + 1] - lo;
  const uint64_t *base = s->pts + lo;
  while (len > 1) {
    uint32_t half = len / 2;
    base = base[half - 1] < key ? base + half : base;
    len -= half;
  }
  uint32_t i = (uint32_t)(base - s->pts) + (len == 1 && *base < key);
  i = i < s->npts ? i : 0;
  uint32_t home = s->order.order[s->pts[i] & RANK_MASK];
  const struct ilb__cand *cd = &snap->cand[home];
  if (ILB__LIKELY(ilb__has_room(cd, ilb__load(cd))))
    return home;
  uint32_t walk = s->npts < RING_WALK ? s->npts : RING_WALK;
  for (uint32_t j = 1; j < walk; j++) {
    if (++i == s->npts)
      i = 0;
    uint32_t c = s->order.order[s->pts[i] & RANK_MASK];
    cd = &snap->cand[c];
    if (c != home && ilb__has_room(cd, ilb__load(cd)))
      return c;
  }
  uint32_t next = ilb__horder_next(&s->order, snap, home, h);
  return next != UINT32_MAX ? next : home;
}

const struct ilb__policy ilb__policy_ring = {
    .id = ILB_POLICY_RING,
    .name = "ring",
    .build = ring_build,
    .destroy = ring_destroy,
    .choose = ring_choose,
};
