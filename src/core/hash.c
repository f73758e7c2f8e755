/* Hashing: XXH64 (the key hash, exported as ilb_hash64) and primes.
 * SPDX-License-Identifier: MIT */
#include "core/internal.h"

/* ---- XXH64 --------------------------------------------------------------
 * Written from the xxHash specification (doc/xxhash_spec.md in Collet's
 * repository): four 64-bit accumulators over 32-byte stripes, then the
 * remaining 8-, 4- and 1-byte pieces, then an avalanche. Input is read as
 * little-endian whatever the host's byte order. Checked against the
 * project's published sanity vectors in tests/test_hash.c. */

#define P1 UINT64_C(0x9E3779B185EBCA87)
#define P2 UINT64_C(0xC2B2AE3D27D4EB4F)
#define P3 UINT64_C(0x165667B19E3779F9)
#define P4 UINT64_C(0x85EBCA77C2B2AE63)
#define P5 UINT64_C(0x27D4EB2F165667C5)

static inline uint64_t rotl64(uint64_t x, unsigned r) {
  return (x << r) | (x >> (64 - r));
}

static inline uint64_t le64(const unsigned char *p) {
  return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
         (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
         (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

static inline uint64_t le32(const unsigned char *p) {
  return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
         (uint64_t)p[3] << 24;
}

static inline uint64_t xxh_round(uint64_t acc, uint64_t lane) {
  acc += lane * P2;
  acc = rotl64(acc, 31);
  return acc * P1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t v) {
  acc ^= xxh_round(0, v);
  return acc * P1 + P4;
}

uint64_t ilb__xxh64(const void *data, size_t len, uint64_t seed) {
  const unsigned char *p = data, *end = p + len;
  uint64_t acc;
  if (len >= 32) {
    uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
    const unsigned char *limit = end - 32;
    do {
      v1 = xxh_round(v1, le64(p));
      v2 = xxh_round(v2, le64(p + 8));
      v3 = xxh_round(v3, le64(p + 16));
      v4 = xxh_round(v4, le64(p + 24));
      p += 32;
    } while (p <= limit);
    acc = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
    acc = xxh_merge(acc, v1);
    acc = xxh_merge(acc, v2);
    acc = xxh_merge(acc, v3);
    acc = xxh_merge(acc, v4);
  } else {
    acc = seed + P5;
  }
  acc += (uint64_t)len;
  for (; end - p >= 8; p += 8) {
    acc ^= xxh_round(0, le64(p));
    acc = rotl64(acc, 27) * P1 + P4;
  }
  if (end - p >= 4) {
    acc ^= le32(p) * P1;
    acc = rotl64(acc, 23) * P2 + P3;
    p += 4;
  }
  for (; p < end; p++) {
    acc ^= (uint64_t)*p * P5;
    acc = rotl64(acc, 11) * P1;
  }
  acc ^= acc >> 33;
  acc *= P2;
  acc ^= acc >> 29;
  acc *= P3;
  acc ^= acc >> 32;
  return acc;
}

int ilb_hash64(uint64_t *hash_out, const void *data, size_t len,
               uint64_t seed) {
  if (!hash_out || (!data && len))
    return ILB_EINVAL;
  *hash_out = ilb__xxh64(len ? data : "", len, seed);
  return 0;
}

/* ---- primes ------------------------------------------------------------- */

int ilb__is_prime(uint32_t x) {
  if (x < 2)
    return 0;
  if (x % 2 == 0)
    return x == 2;
  for (uint32_t d = 3; d <= x / d; d += 2)
    if (x % d == 0)
      return 0;
  return 1;
}
