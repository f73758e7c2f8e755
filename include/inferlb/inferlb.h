/*
 * inferlb — the decision engine of a load balancer for ML / LLM inference
 * replicas. This is the one public header: the whole stable API.
 *
 * SPDX-License-Identifier: MIT
 *
 * ---------------------------------------------------------------------------
 * Conventions (read once, they hold for every declaration below)
 * ---------------------------------------------------------------------------
 *
 * Names     ilb_ for functions and types, ILB_ for macros and constants.
 * Errors    Functions return int: 0 on success, a negative ILB_E* code on
 *           failure. ilb_strerror() / ilb_err_name() describe any code.
 *           Bad input (NULL, unknown id, NaN, out-of-range value) is always an
 *           error code, never an abort; on error nothing observable changes.
 * Out-params come first, then the object, then the rest (libgit2 order).
 * Structs   Every public struct begins with `size_t struct_size`. Fill it with
 *           sizeof(the struct) -- the *_init() functions do that and set the
 *           documented defaults. Input structs (host, replica spec, request,
 *           outcome) must be at least their size in version 0.1 (today's
 *           sizeof); a later version gives defaults to fields an older caller
 *           does not have. A larger struct_size (a newer caller) is accepted
 *           only when the unknown tail is all zero bytes and at most 4096
 *           bytes, else ILB_ESIZE. Output structs (pick result, replica info)
 *           accept any size that covers their first field after struct_size;
 *           they are filled up to min(caller size, library size).
 * Constants Enumerations document the values; functions take and return
 *           int32_t so the ABI does not depend on the size of an enum.
 * Options   Tunables are an option id + one setter + one getter + a bounds
 *           query, so a new tunable adds no symbol. No variadic functions.
 * Callbacks One host struct; every callback takes `void *user_data` last and
 *           the library never dereferences it.
 * Time      Comes from the host clock callback (default CLOCK_MONOTONIC) and
 *           is expressed in nanoseconds.
 * Random    Comes from a generator seeded with ilb_host.seed (or the host's
 *           own rand callback). Same inputs, same seed, same decisions.
 *
 * ---------------------------------------------------------------------------
 * Threading model
 * ---------------------------------------------------------------------------
 *
 * A pool may be used from any number of threads at once.
 *
 * Readers -- ilb_pick() and ilb_complete() -- take no lock, make no allocation
 * and no system call. ilb_pick() reads an immutable snapshot of the pool
 * (candidates, weights, the policy's precomputed tables) loaded from an atomic
 * pointer, and updates per-replica atomic counters (in-flight). Each pick
 * claims one entry of a fixed ticket table; the claimed entry doubles as the
 * reader's registration, so no separate epoch or reference count is touched.
 * Every thread gets a small thread number at its first pick (the lowest
 * free one; numbers are recycled when threads exit). Threads 1..64 own
 * ILB_THREAD_TICKETS private entries per pool, claimed with a plain store;
 * writers order those against their snapshot swap with membarrier(2) (Linux
 * MEMBARRIER_CMD_PRIVATE_EXPEDITED), or, where that is unavailable (or the
 * environment variable INFERLB_NO_MEMBARRIER=1 was set when the first pool
 * was created), such picks issue a full fence. (Should membarrier fail
 * later, say under a seccomp filter installed afterwards, picks switch to
 * the fence and writers keep old snapshots and removed replicas' records
 * until ilb_pool_free, with one ILB_LOG_WARN.) Other claims use one
 * compare-and-swap. ilb_complete() releases the entry with one
 * compare-and-swap (which is what detects a second completion) and updates
 * the replica's counter with one atomic add.
 *
 * Writers -- adding, removing, reweighting replicas, changing options -- are
 * serialised by a per-pool mutex. A writer builds a new snapshot, publishes it
 * with an atomic store, then waits for every pick that was still reading an
 * older snapshot to finish (picks are short: the wait is typically well under
 * a microsecond, bounded by one pick) before freeing the old snapshot. A
 * published write ("Writer, publishes" below) therefore costs O(replicas +
 * ticket table size + the policy's table: O(L log replicas) for
 * weighted_round_robin, L <= 2^22; O(P) for ring, P points <= 2^22, plus
 * sorting the replicas by id; O(M log M) for maglev and chwbl, M the table
 * size (O(M log replicas) more when weights are uneven); O(replicas log
 * replicas) for rendezvous) plus one membarrier(2) call. Every option
 * change publishes, so it rebuilds the policy's tables too. Inside a
 * batch (ilb_pool_batch_begin() .. ilb_pool_batch_commit()) an add is O(1)
 * amortized, a remove O(replicas), and the commit publishes once.
 *
 * Guarantees: a pick that starts after a removal was published (when
 * ilb_replica_remove() returned, or at the commit of the batch it was made
 * in) never returns the removed replica; the in-flight count of a replica
 * never goes negative and is exact (every successful pick is matched by at
 * most one completion), and never exceeds the replica's capacity unless
 * ILB_OPT_ALLOW_OVER_CAPACITY is set; a ticket completed twice is ILB_ESTALE
 * and changes nothing.
 *
 * Host callbacks called by a writer (event, log, clock, allocator) run on
 * the writer's thread with the pool's mutex held. They may call readers
 * (ilb_pick, ilb_complete, ilb_replica_get, ilb_pool_count,
 * ilb_pool_get_option) but a writer call on the same pool from inside any of
 * them returns ILB_EDEADLK instead of deadlocking or re-entering a half-done
 * change (also for writes nested through callbacks more than 32 pools
 * deep). The check is per thread: a callback of pool A that writes pool B
 * while another thread's callback of B writes A deadlocks -- do not write,
 * from a callback, a pool whose own callbacks write back. During
 * ILB_EVENT_REPLICA_REMOVED the replica is already gone (ilb_replica_get
 * gives ILB_ENOENT).
 *
 * Determinism: random draws and round-robin cursors are per thread number
 * (a thread's first pick takes the lowest free number), so a host that
 * picks from one thread gets the same decisions for the same seed and
 * calls; one that moves its picks between threads may not.
 *
 * Tickets are salted per pool and per ticket table, so a stale ticket or one
 * from another pool is ILB_ESTALE (up to a 2^-32 chance of matching a live
 * ticket by accident).
 *
 * A thread's first pick takes its thread number: a short mutex and, inside
 * pthread_setspecific(), possibly an allocation by libc -- once per thread,
 * never again. The library is linked -z nodelete (it owns a pthread key
 * destructor), so dlclose() does not unmap it.
 */
#ifndef INFERLB_INFERLB_H
#define INFERLB_INFERLB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Export macro                                                              */
/* ------------------------------------------------------------------------ */

#if defined(ILB_BUILDING_LIBRARY) && defined(__GNUC__)
#define ILB_API __attribute__((visibility("default")))
#else
#define ILB_API
#endif

/* ------------------------------------------------------------------------ */
/* Versions                                                                  */
/* ------------------------------------------------------------------------ */

/* Package version of this header. The SONAME (libinferlb.so.0) changes only
 * on an incompatible ABI change and is independent of these numbers. */
#define ILB_VERSION_MAJOR 0
#define ILB_VERSION_MINOR 6
#define ILB_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH. */
#define ILB_VERSION_NUM                                                      \
  (ILB_VERSION_MAJOR * 10000 + ILB_VERSION_MINOR * 100 + ILB_VERSION_PATCH)

/* ilb_version - version of the library actually loaded, as ILB_VERSION_NUM.
 * Compare with ILB_VERSION_NUM to detect a header/library mismatch; bindings
 * refuse a different major version. Thread-safe. O(1). */
ILB_API uint32_t ilb_version(void);

/* ilb_version_string - the same as "MAJOR.MINOR.PATCH", static storage.
 * Thread-safe. O(1). */
ILB_API const char *ilb_version_string(void);

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* One table, never renumbered; new codes are appended. */
#define ILB_ERRNO_MAP(X)                                                      \
  X(EINVAL, -1, "invalid argument")                                          \
  X(ENOMEM, -2, "out of memory")                                             \
  X(ENOENT, -3, "no replica with this id")                                   \
  X(EEXIST, -4, "already exists: a replica id, pool name, route or limit name") \
  X(ENOREPLICA, -5, "no replica is available to take the request")           \
  X(ESATURATED, -6, "every candidate replica is at its concurrency limit")   \
  X(ESTALE, -7, "stale: unknown or completed ticket, or an old KV event")    \
  X(EREMOVED, -8, "the ticket's replica was removed; ticket released")       \
  X(ERANGE, -9, "value out of range")                                        \
  X(EBUSY, -10, "not possible while requests are in flight")                 \
  X(ETICKETS, -11, "ticket table full: too many requests in flight")         \
  X(ESIZE, -12, "struct_size unknown, or unknown non-zero struct tail")      \
  X(EUNKNOWN, -13, "unknown option, policy or constant")                     \
  X(EDEADLK, -14, "writer call from inside a callback of the same pool")     \
  X(ETOOBIG, -15, "string or count exceeds its documented limit")          \
  X(ENOKEY, -16, "the policy needs an affinity key and the request has none") \
  X(EPARSE, -17, "malformed metrics text (ilb_scrape_error tells where)")   \
  X(ESHED, -18, "request shed: the pool is overloaded (see retry_after_ns)") \
  X(ENOMODEL, -19, "no pool serves the request's model and no route matches") \
  X(ERATELIMIT, -20, "over a rate limit (see retry_after_ns)")              \
  X(ENOSPC, -21, "buffer too small (the size needed is reported)")

/* Error codes. ILB_OK is 0; every error is negative. */
enum ilb_errno {
  ILB_OK = 0,
#define ILB__ERR_ENUM(name, val, text) ILB_##name = (val),
  ILB_ERRNO_MAP(ILB__ERR_ENUM)
#undef ILB__ERR_ENUM
  ILB_ERRNO_MIN = -21 /* lowest code defined by this header */
};

/* ilb_strerror - human-readable text for an error code ("success" for 0,
 * "unknown error" for a value not in the table). Static storage, never NULL.
 * Thread-safe. O(1). */
ILB_API const char *ilb_strerror(int err);

/* ilb_err_name - the code's name without prefix, e.g. "EINVAL" ("OK" for 0,
 * "EUNKNOWNCODE" for a value not in the table). Static storage, never NULL.
 * Thread-safe. O(1). */
ILB_API const char *ilb_err_name(int err);

/* ------------------------------------------------------------------------ */
/* Events and logging                                                        */
/* ------------------------------------------------------------------------ */

/* Replica states. */
enum ilb_replica_state {
  ILB_REPLICA_ACTIVE = 1,     /* in the pool, eligible for picks */
  ILB_REPLICA_REMOVED = 2,    /* removed; only seen in events */
  ILB_REPLICA_UNAVAILABLE = 3 /* in the pool, skipped by picks
                                 (ilb_replica_set_available, and since 0.4
                                 health, ejection, an open breaker, drain:
                                 see ilb_replica_info.excluded) */
};

/* Event types delivered to ilb_host.on_event. */
enum ilb_event_type {
  ILB_EVENT_REPLICA_ADDED = 1,    /* state: none -> ACTIVE (UNAVAILABLE
                                     when it starts excluded, e.g. with
                                     ILB_OPT_HEALTH_INITIAL unknown) */
  ILB_EVENT_REPLICA_REMOVED = 2,  /* state: ACTIVE or UNAVAILABLE -> REMOVED */
  ILB_EVENT_REPLICA_WEIGHT = 3,   /* weight changed (old_value -> new_value);
                                     old_state = new_state = current state */
  ILB_EVENT_REPLICA_STATE = 4,    /* ilb_replica_set_available changed the
                                     host's verdict (old_state -> new_state;
                                     since 0.4 both may be UNAVAILABLE when
                                     something else also excludes it;
                                     reason HOST) */
  /* Since 0.4: health and failure handling (see "Health and failure
   * handling"). old_state / new_state are the replica's state (ACTIVE, or
   * UNAVAILABLE while anything excludes it from picks); reason says why. */
  ILB_EVENT_HEALTH = 5,    /* active health changed: old_value -> new_value
                              are enum ilb_health */
  ILB_EVENT_EJECTED = 6,   /* outlier ejection: new_value = how long (ns),
                              old_value = its ejection count */
  ILB_EVENT_RESTORED = 7,  /* ejection ended (old_value = ejected for, ns) */
  ILB_EVENT_PANIC = 8,     /* pool-wide, replica_id NULL, old_state and
                              new_state 0: new_value 1 = the
                              healthy share fell below
                              ILB_OPT_PANIC_THRESHOLD_PERCENT, picks go to
                              every replica; 0 = back to normal. old_value =
                              healthy share in percent */
  ILB_EVENT_BREAKER = 9,   /* circuit breaker: old_value -> new_value are
                              enum ilb_breaker */
  ILB_EVENT_DRAINED = 10   /* drain finished: new_value = requests still in
                              flight (0, or > 0 when the deadline passed) */
};

/* Why an event happened (ilb_event.reason); ilb_reason_name() names them. */
enum ilb_reason {
  ILB_REASON_NONE = 0,
  ILB_REASON_PROBE_PASSED = 1,        /* rise threshold reached */
  ILB_REASON_PROBE_FAILED = 2,        /* fall threshold reached */
  ILB_REASON_NOT_READY = 3,           /* probe said: alive, not ready */
  ILB_REASON_CONSECUTIVE_5XX = 4,     /* ILB_OPT_OUTLIER_CONSECUTIVE_5XX */
  ILB_REASON_CONSECUTIVE_GATEWAY = 5, /* ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY */
  ILB_REASON_SUCCESS_RATE = 6,        /* ILB_OPT_OUTLIER_SUCCESS_RATE_STDEV */
  ILB_REASON_FAILURE_PERCENT = 7,     /* ILB_OPT_OUTLIER_FAILURE_PERCENT */
  ILB_REASON_EJECTION_EXPIRED = 8,    /* ejection time over */
  ILB_REASON_BREAKER_CONSECUTIVE = 9, /* ILB_OPT_BREAKER_CONSECUTIVE */
  ILB_REASON_BREAKER_ERROR_RATE = 10, /* ILB_OPT_BREAKER_ERROR_PERCENT */
  ILB_REASON_BREAKER_TIMEOUT = 11,    /* open -> half-open */
  ILB_REASON_BREAKER_TRIALS_PASSED = 12, /* half-open -> closed */
  ILB_REASON_BREAKER_TRIAL_FAILED = 13,  /* half-open -> open */
  ILB_REASON_DRAIN_DONE = 14,         /* last request completed */
  ILB_REASON_DRAIN_DEADLINE = 15,     /* deadline passed first */
  ILB_REASON_HEALTHY_SHARE = 16,      /* panic on / off */
  ILB_REASON_HOST = 17                /* ilb_replica_set_available */
};

/* One replica state change. Valid only during the callback. */
typedef struct ilb_event {
  size_t struct_size;    /* sizeof(ilb_event) as the library knows it */
  int32_t type;          /* enum ilb_event_type */
  int32_t old_state;     /* enum ilb_replica_state, 0 when none */
  int32_t new_state;     /* enum ilb_replica_state */
  int32_t reason;        /* enum ilb_reason (since 0.4; 0 before) */
  const char *replica_id;   /* NUL-terminated; NULL for ILB_EVENT_PANIC */
  void *replica_host_data;  /* as given to ilb_replica_add */
  uint64_t old_value;       /* type-specific (old weight, ...) */
  uint64_t new_value;       /* type-specific (new weight, ...) */
  uint64_t timestamp_ns;    /* host clock when the change was made */
} ilb_event;

/* Log levels; a message is delivered when its level <= ilb_host.log_level. */
enum ilb_log_level {
  ILB_LOG_NONE = 0,
  ILB_LOG_ERROR = 1,
  ILB_LOG_WARN = 2,
  ILB_LOG_INFO = 3,
  ILB_LOG_DEBUG = 4
};

/* ------------------------------------------------------------------------ */
/* Host callbacks                                                            */
/* ------------------------------------------------------------------------ */

/* Everything the library needs from its host. Copied by ilb_pool_new(); every
 * pointer may be NULL (defaults below). Initialise with ilb_host_init(). */
typedef struct ilb_host {
  size_t struct_size;
  /* Monotonic time in nanoseconds. Default: CLOCK_MONOTONIC, and on the
   * pick and complete paths CLOCK_MONOTONIC_COARSE (a few ns; it lags by
   * less than a kernel tick). Must be thread-safe if the pool is used from
   * several threads. */
  uint64_t (*clock_ns)(void *user_data);
  /* Replica state changes (see ilb_event). Default: none. */
  void (*on_event)(const ilb_event *event, void *user_data);
  /* Log messages; msg is not NUL-terminated, len bytes long. Default: none. */
  void (*log)(int32_t level, const char *msg, size_t len, void *user_data);
  /* Allocator. Either both alloc and free are set or neither (then malloc and
   * free). alloc returns memory aligned for any type, or NULL. Never called
   * on the pick/complete path. */
  void *(*alloc)(size_t size, void *user_data);
  void (*free)(void *ptr, void *user_data);
  /* Optional replacement random generator: 64 uniformly random bits per
   * call. Called on the pick path, from any picking thread. Default: the
   * library's splitmix64 streams seeded with `seed`. */
  uint64_t (*rand)(void *user_data);
  uint64_t seed;       /* seed of the built-in generator; default 0 */
  int32_t log_level;   /* enum ilb_log_level; default ILB_LOG_WARN */
  int32_t reserved0;   /* must be 0 (ILB_EINVAL otherwise) */
  void *user_data;     /* passed last to every callback */
} ilb_host;

/* ilb_host_init - zero *host, set struct_size and the defaults above.
 * Errors: ILB_EINVAL if host is NULL. Thread-safe. O(1). */
ILB_API int ilb_host_init(ilb_host *host);

/* ------------------------------------------------------------------------ */
/* Policies and options                                                      */
/* ------------------------------------------------------------------------ */

/* Routing policies. Names (ilb_policy_name) are the same in the docs, the
 * benchmark output and the simulator. */
enum ilb_policy_id {
  ILB_POLICY_ROUND_ROBIN = 1,            /* "round_robin" */
  ILB_POLICY_WEIGHTED_ROUND_ROBIN = 2,   /* "weighted_round_robin" */
  ILB_POLICY_RANDOM = 3,                 /* "random" */
  ILB_POLICY_WEIGHTED_RANDOM = 4,        /* "weighted_random" */
  ILB_POLICY_LEAST_CONN = 5,             /* "least_conn" */
  ILB_POLICY_WEIGHTED_LEAST_REQUEST = 6, /* "weighted_least_request" */
  ILB_POLICY_P2C = 7,                    /* "p2c" (default) */
  /* Consistent hashing of the request's affinity key (ilb_request.key).
   * Tables depend only on the replicas' ids and weights and the options,
   * never on the order replicas were added in, the seed or the host: every
   * gateway given the same membership maps a key to the same replica. */
  ILB_POLICY_RING = 8,       /* "ring": ketama-style ring, ILB_OPT_RING_VNODES
                                points per unit of weight; O(log points) */
  ILB_POLICY_MAGLEV = 9,     /* "maglev": Maglev lookup table of
                                ILB_OPT_MAGLEV_TABLE_SIZE entries; O(1) */
  ILB_POLICY_RENDEZVOUS = 10,/* "rendezvous": highest random weight
                                (weighted); O(replicas), for small pools */
  ILB_POLICY_CHWBL = 11,     /* "chwbl": consistent hashing with bounded
                                loads over the maglev table; see
                                ILB_OPT_HASH_BALANCE_FACTOR */
  /* Load-aware policies that score candidates. Each compares every
   * available candidate when the pool has at most ILB_OPT_SCAN_MAX of them,
   * else ILB_OPT_P2C_CHOICES distinct ones sampled at random; the lowest
   * score wins, and scores within ILB_OPT_TIE_PERCENT of the best are
   * broken at random (so gateways reading the same scrape spread out). A
   * replica's weight is its relative capacity (A100 = 5, T4 = 2): every
   * load term below is divided by it. */
  ILB_POLICY_COMPOSITE = 12, /* "composite": GPU-aware weighted sum of
                                telemetry and local load; see
                                ILB_OPT_SCORE_QUEUE and "Telemetry" */
  ILB_POLICY_PEAK_EWMA = 13, /* "peak_ewma": latency EWMA (peak-sensitive,
                                from ilb_complete) x (in_flight + 1) /
                                weight; see ILB_OPT_EWMA_DECAY_MS */
  ILB_POLICY_LEAST_TOKENS = 14,/* "least_tokens": outstanding token cost
                                (prompt + output estimates of the requests
                                in flight, this one included) / weight;
                                see ILB_OPT_TOKEN_OUTPUT_PERCENT */
  ILB_POLICY_PREFIX = 15     /* "prefix" (since 0.5): prefix-cache-aware:
                                the replica likely to hold the longest
                                prefix of the prompt's KV cache, by a cost
                                model and under a bounded load; see
                                "Prefix-cache-aware routing" */
};

/* What the composite policy does when no available replica has fresh
 * telemetry: ILB_OPT_TELEMETRY_ALL_STALE. */
enum ilb_all_stale {
  ILB_ALL_STALE_FAIL_OPEN = 0, /* route on local load alone (default) */
  ILB_ALL_STALE_SATURATED = 1  /* fail the pick with ILB_ESATURATED */
};

/* What the hashing policies do with a request that has no key (req NULL,
 * key NULL or key_len 0): ILB_OPT_HASH_NO_KEY. */
enum ilb_no_key {
  ILB_NO_KEY_LEAST_REQUEST = 0, /* choose as p2c does (default) */
  ILB_NO_KEY_ERROR = 1          /* fail the pick with ILB_ENOKEY */
};

/* ilb_policy_name - the policy's name, or NULL for an unknown id.
 * Thread-safe. O(1). */
ILB_API const char *ilb_policy_name(int32_t policy);

/* ilb_policy_from_name - the id of a policy by name (exact match).
 * Errors: ILB_EINVAL (NULL argument), ILB_EUNKNOWN (no such policy).
 * Thread-safe. O(number of policies). */
ILB_API int ilb_policy_from_name(int32_t *policy_out, const char *name);

/* Pool options. Values are int64_t; ranges and defaults from
 * ilb_option_bounds(). */
enum ilb_option {
  /* Routing policy, an enum ilb_policy_id. Default ILB_POLICY_P2C. */
  ILB_OPT_POLICY = 100,
  /* Number of distinct replicas sampled by p2c. Range 2..16, default 2. */
  ILB_OPT_P2C_CHOICES = 101,
  /* Size of the shared ticket table. Rounded up to a power of two. Range
   * 64..16777216, default 65536. In addition, each of the first 64 threads
   * (by thread number, see the threading model) has ILB_THREAD_TICKETS
   * private entries it uses first; so one thread alone can hold
   * MAX_IN_FLIGHT + ILB_THREAD_TICKETS requests in flight, and the pool
   * MAX_IN_FLIGHT + 64 * ILB_THREAD_TICKETS at most. Changing it takes
   * effect at once, also inside a batch, and needs a pool with no request
   * in flight (ILB_EBUSY otherwise) and no concurrent pick; replaced tables (8 bytes an entry) are kept until ilb_pool_free,
   * so a stray completion racing the change stays safe -- one per size, so
   * their memory stays below twice the largest table used. */
  ILB_OPT_MAX_IN_FLIGHT = 102,
  /* Whether a pick may exceed a replica's capacity when every candidate is
   * full (1) or fails with ILB_ESATURATED (0). Default 0. It never places
   * a request on an unavailable replica. */
  ILB_OPT_ALLOW_OVER_CAPACITY = 103,
  /* Hashing policies, request without a key: an enum ilb_no_key. Default
   * ILB_NO_KEY_LEAST_REQUEST. */
  ILB_OPT_HASH_NO_KEY = 104,
  /* ring: points on the ring per unit of replica weight. Range 1..1000,
   * default 160 (ketama). A replica gets vnodes * weight points; when the
   * ring would exceed 2^22 points all counts are scaled down in proportion
   * (then a membership change can move slightly more than its own share of
   * keys -- keep weights small, 1..100, with ring). */
  ILB_OPT_RING_VNODES = 105,
  /* maglev and chwbl: size M of the lookup table, a prime, or 0 for "auto":
   * the smallest prime >= max(65537, 100 * P), P the smallest power of two
   * >= the number of replicas, capped at 16777213 (so the size, and with it
   * nearly every key's place, changes only when the pool crosses a power of
   * two). Range 0..16777213, default 65537; a value that is neither 0 nor a
   * prime >= 3 is ILB_ERANGE. A pool with more replicas than M uses the
   * auto size. M >= 100 * N keeps every replica's share within about 1% of
   * its ideal (the Maglev paper). Maglev moves more keys than the removed
   * or added replica's own on a membership change, the more the smaller
   * M / N is: measured 1.3x the ideal share at N = 64, M = 65537, and
   * 6.4x at N = 700 with the auto size (M = 102407) (ring and rendezvous
   * move exactly the ideal share). 4 bytes an entry, rebuilt on every
   * publish (membership, weight or option change). */
  ILB_OPT_MAGLEV_TABLE_SIZE = 106,
  /* chwbl: balance factor c in percent. A replica of weight w may take a
   * request while its in-flight count is below
   * ceil(c/100 * (T + 1) * w / W), where T counts the requests in flight
   * that chwbl placed (the new one is the + 1; requests placed before the
   * pool switched to chwbl are not counted) and W is the total weight of
   * the available replicas (T still counts requests in flight on
   * unavailable ones, which loosens the bounds while they drain). When no
   * replica is below its bound the request goes to the least loaded by
   * (in_flight + 1) / weight (capacities still apply). Exact with one
   * picking thread while availability does not change; P threads picking
   * at once may each see room that another is taking, so a replica can
   * exceed its bound by up to P - 1. T is one counter per pool: every chwbl
   * pick and the completion of its ticket add one atomic operation on a
   * shared cache line. Within a zone (ILB_OPT_LOCALITY, since 0.6) T and
   * W are the zone's: T the requests in flight on its replicas, summed at
   * each pick (O(zone replicas)), W their available weight; the same holds
   * for the prefix policy's bound. Range 100..10000, default 125
   * (c = 1.25). */
  ILB_OPT_HASH_BALANCE_FACTOR = 107,

  /* --- telemetry and the scoring policies (since 0.3) ------------------ */

  /* Age in milliseconds at which a reported signal (ilb_replica_report)
   * becomes unknown. Set it to about three scrape intervals. Range
   * 1..86400000 (one day), default 10000. */
  ILB_OPT_TELEMETRY_MAX_AGE_MS = 108,
  /* composite, when no available replica has fresh telemetry: an enum
   * ilb_all_stale. Default ILB_ALL_STALE_FAIL_OPEN. With
   * ILB_ALL_STALE_SATURATED a pick whose compared candidates are all stale
   * checks the whole pool: O(1) when every replica's telemetry has
   * expired, O(replicas) when only unavailable ones still have some. */
  ILB_OPT_TELEMETRY_ALL_STALE = 109,
  /* composite: the weights of its terms, in thousandths. For a replica of
   * weight w with fresh telemetry, in_flight requests this pool has placed
   * on it and not completed, the score is
   *   QUEUE   * (requests_waiting + in_flight + 1) / w
   * + GPU     * gpu_utilization                       (0..1)
   * + KV      * kv_cache_usage                        (0..1)
   * + LATENCY * ttft_s                                (seconds)
   * + MEMORY  * (1 - gpu_memory_free / gpu_memory_total)   (0..1)
   * all divided by 1000. A signal the replica does not report adds 0. The
   * telemetry terms of a replica whose telemetry is stale (or absent) are
   * unknown: it is compared with the others on its local load term
   * QUEUE * (in_flight + 1) / w plus the mean telemetry terms of the
   * fresh candidates compared with it -- neither idle nor penalised, so a
   * stale "idle" replica does not keep winning. Defaults (seed 002): QUEUE
   * 400, GPU 300, KV 200, LATENCY 100, MEMORY 0. Range 0..1000000 each. */
  ILB_OPT_SCORE_QUEUE = 110,
  ILB_OPT_SCORE_GPU = 111,
  ILB_OPT_SCORE_KV = 112,
  ILB_OPT_SCORE_LATENCY = 113,
  ILB_OPT_SCORE_MEMORY = 114,
  /* composite, peak_ewma, least_tokens: pools with at most this many
   * candidates are scanned in full (O(replicas)); larger ones sample
   * ILB_OPT_P2C_CHOICES candidates (O(k)). Range 0..1048576, default 16. */
  ILB_OPT_SCAN_MAX = 115,
  /* composite, deep health: a replica whose fresh kv_cache_usage is at least
   * this percentage takes no new request while another one can (so does
   * one whose fresh model_ready is 0). 0 = off. Range 0..100, default 100
   * (only a full KV cache). */
  ILB_OPT_KV_SATURATION_PERCENT = 116,
  /* composite, deep health: a replica whose fresh gpu_memory_free is below
   * this many MiB takes no new request while another one can. 0 = off
   * (default: vLLM and SGLang preallocate GPU memory, so their free memory
   * is near zero by design; useful with Triton or llama.cpp). Range
   * 0..16777216. When every candidate is filtered the pick fails open
   * (chooses among all of them by score). */
  ILB_OPT_GPU_MEMORY_MIN_FREE_MIB = 117,
  /* composite, peak_ewma, least_tokens: scores within this percentage of
   * the best are ties, broken at random. Range 0..100, default 2. */
  ILB_OPT_TIE_PERCENT = 118,
  /* peak_ewma: decay time constant tau of the latency average, in ms: an
   * observation older by dt weighs exp(-dt / tau); the estimate itself
   * decays towards 0 with the time since the last observation, so an idle
   * replica is tried again. A latency above the estimate replaces it at
   * once (the "peak"). Range 1..3600000, default 10000. */
  ILB_OPT_EWMA_DECAY_MS = 119,
  /* peak_ewma: latency estimate of a replica that has no observation yet,
   * in ms. Range 1..3600000, default 1000. */
  ILB_OPT_EWMA_DEFAULT_MS = 120,
  /* peak_ewma: latency recorded for a failed request (outcome
   * CONNECT_ERROR or TIMEOUT; HTTP_ERROR with http_status 0 (unknown), 429
   * or >= 500; or any outcome with http_status 429 or >= 500) when larger
   * than the measured one, in ms, so a replica that fails fast does not
   * attract traffic. 0 = record the measured latency only. Range
   * 0..3600000, default 10000. */
  ILB_OPT_EWMA_PENALTY_MS = 121,
  /* least_tokens: the cost of a request is prompt_tokens +
   * output_tokens * this / 100 (a decode token costs more than a prefill
   * token). Range 0..100000, default 100. */
  ILB_OPT_TOKEN_OUTPUT_PERCENT = 122,
  /* least_tokens: the cost of a request without token estimates (both 0,
   * or a cost that comes to 0). Range 1..16777216, default 512. */
  ILB_OPT_TOKEN_DEFAULT_COST = 123,

  /* --- health and failure handling (since 0.4) --------------------------
   * Defaults follow Envoy and HAProxy where they have one (named below);
   * everything that takes replicas out on its own (ejection, breakers) is
   * off until a threshold is set, as in Envoy, so a pool behaves as in 0.3
   * until the host opts in. Times are in ms on the host clock. */

  /* Active health: the state of a replica when it is added, an enum
   * ilb_health: ILB_HEALTH_HEALTHY (default: routable at once, as HAProxy
   * and Envoy treat new hosts) or ILB_HEALTH_UNKNOWN (not routable until
   * its first passing probe, like a Kubernetes readiness probe). */
  ILB_OPT_HEALTH_INITIAL = 124,
  /* Consecutive passing probes that make a non-healthy replica healthy
   * (one is enough from UNKNOWN, as in Envoy). Range 1..1000, default 2
   * (HAProxy "rise"). */
  ILB_OPT_HEALTH_RISE = 125,
  /* Consecutive failing (or not-ready) probes that take a healthy replica
   * out. Range 1..1000, default 3 (HAProxy "fall"). */
  ILB_OPT_HEALTH_FALL = 126,
  /* Probe interval of a healthy replica; 0 = ilb_next_due never asks for
   * probes. Range 0..86400000, default 5000. */
  ILB_OPT_PROBE_INTERVAL_MS = 127,
  /* Probe interval of a replica that is not healthy (unknown, starting,
   * unhealthy): shorter, so a replica that finished loading its model is
   * back soon. Range 1..86400000, default 2000. */
  ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS = 128,
  /* Delay before a new replica's first probe. Range 0..86400000, default
   * 0. */
  ILB_OPT_PROBE_INITIAL_DELAY_MS = 129,
  /* Each interval (probes and scrapes) is lengthened by a random 0..this
   * percent, so probes of replicas added together spread out (Envoy's
   * interval_jitter_percent). Range 0..100, default 10. */
  ILB_OPT_PROBE_JITTER_PERCENT = 130,
  /* Interval of metrics scrapes ilb_next_due asks for; 0 = none. Set it
   * to about a third of ILB_OPT_TELEMETRY_MAX_AGE_MS. Range 0..86400000,
   * default 0. */
  ILB_OPT_SCRAPE_INTERVAL_MS = 131,

  /* Passive outlier detection (Envoy's outlier_detection), from the
   * outcomes given to ilb_complete. An "error" is a gateway failure
   * (CONNECT_ERROR, REFUSED, TIMEOUT) or an HTTP_ERROR with http_status
   * 0 or >= 500, or an OK with http_status >= 500; a success is an OK or
   * an HTTP_ERROR with a 4xx; CANCELLED counts as neither.
   * Eject after this many consecutive errors; 0 = off (default; Envoy's
   * value when enabled: 5). Model servers answer 5xx mostly to bad input,
   * so the gateway-failure rule below is the one to start with. Range
   * 0..65535. */
  ILB_OPT_OUTLIER_CONSECUTIVE_5XX = 132,
  /* Eject after this many consecutive gateway failures; 0 = off (default;
   * Envoy's value: 5). Range 0..65535. */
  ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY = 133,
  /* Interval of the success-rate and failure-percentage analysis, and of
   * the ejection-count decay. Range 1..86400000, default 10000 (Envoy). */
  ILB_OPT_OUTLIER_INTERVAL_MS = 134,
  /* The n-th ejection in a row lasts min(base * n, max) plus jitter; n
   * drops by one after each interval the replica spends neither ejected
   * nor ejected again. Range 1..86400000, default 30000 (Envoy). */
  ILB_OPT_OUTLIER_BASE_EJECTION_MS = 135,
  /* Range 1..86400000, default 300000 (Envoy's max_ejection_time). */
  ILB_OPT_OUTLIER_MAX_EJECTION_MS = 136,
  /* An ejection lasts a random 0..this percent longer, so replicas
   * ejected together do not return together. Range 0..100, default 10. */
  ILB_OPT_OUTLIER_JITTER_PERCENT = 137,
  /* At most floor(this% * replicas) replicas are ejected at once -- really
   * at most: in a pool of 1 none, with 50% in a pool of 3 one (Envoy
   * always allowed one, Envoy issue #3263). Range 0..100, default 50
   * (Envoy: 10, which in the small pools of inference fleets, under 10
   * replicas, would never eject). */
  ILB_OPT_OUTLIER_MAX_EJECTION_PERCENT = 138,
  /* Success-rate ejection: at each interval, among the replicas with at
   * least ILB_OPT_OUTLIER_REQUEST_VOLUME completions in it (at least
   * ILB_OPT_OUTLIER_MIN_HOSTS of them), eject those whose success rate is
   * below mean - this/1000 * stddev. 0 = off (default; Envoy: 1900). Range
   * 0..100000. */
  ILB_OPT_OUTLIER_SUCCESS_RATE_STDEV = 139,
  /* Failure-percentage ejection: at each interval, with the same minimum
   * hosts and volume, eject a replica whose errors are at least this
   * percentage of its completions. 0 = off (default; Envoy's threshold:
   * 85). Range 0..100. */
  ILB_OPT_OUTLIER_FAILURE_PERCENT = 140,
  /* Range 1..1000000, default 5 (Envoy). */
  ILB_OPT_OUTLIER_MIN_HOSTS = 141,
  /* Range 1..1000000000, default 100 (Envoy's success-rate volume; its
   * failure-percentage volume is 50). */
  ILB_OPT_OUTLIER_REQUEST_VOLUME = 142,

  /* Panic: when the replicas not excluded by health, ejection or an open
   * breaker are fewer than this percentage of those the host has not taken
   * out (unavailable, draining) and that are not still getting ready
   * (UNKNOWN, STARTING), picks ignore unhealthiness, ejection and breakers
   * (fail open; replicas not ready yet stay out) until the share recovers;
   * ILB_EVENT_PANIC says so. 0 = never. Range 0..100, default 50 (Envoy's
   * healthy_panic_threshold). */
  ILB_OPT_PANIC_THRESHOLD_PERCENT = 143,

  /* Slow start: a replica added, or back from unhealthy or ejected, ramps
   * its effective weight over this window as w * max(t^(1/aggression),
   * min_weight), t = time since it became routable / window (Envoy's
   * shape), in 32 steps (each step republishes). Applies to the policies
   * that use weights: weighted_round_robin, weighted_random,
   * weighted_least_request, p2c, composite, peak_ewma, least_tokens. Not
   * to the hashing policies, whose keys would move back and forth, nor to
   * round_robin, random, least_conn. 0 = off (default, as Envoy); 30000 to
   * 60000 suits replicas whose caches start cold. Range 0..3600000. */
  ILB_OPT_SLOW_START_MS = 144,
  /* Aggression in thousandths: 1000 = linear (default, Envoy 1.0); larger
   * ramps faster at first. Range 1..100000. */
  ILB_OPT_SLOW_START_AGGRESSION = 145,
  /* Lowest effective weight during the ramp, percent. Range 1..100,
   * default 10 (Envoy). */
  ILB_OPT_SLOW_START_MIN_WEIGHT_PERCENT = 146,

  /* Circuit breaker per replica: closed -> open on consecutive errors (as
   * defined for outlier detection) or on an error rate over a sliding
   * window; open: no picks for ILB_OPT_BREAKER_OPEN_MS; then half-open: at
   * most ILB_OPT_BREAKER_HALF_OPEN_MAX requests in flight, closed again
   * after ILB_OPT_BREAKER_CLOSE_SUCCESSES successes in a row, open again
   * on an error. Opens after this many consecutive errors; 0 = off
   * (default). Range 0..65535. */
  ILB_OPT_BREAKER_CONSECUTIVE = 147,
  /* Opens when errors reach this percentage of the completions (CANCELLED
   * ones aside) in the last window, given at least
   * ILB_OPT_BREAKER_MIN_REQUESTS of them. The window is kept in halves of
   * ILB_OPT_BREAKER_WINDOW_MS / 2 that ilb_next_due moves on, so it covers
   * the last 1 to 1.5 windows (until the second half ends: everything
   * since the replica was added). 0 = off (default; resilience4j uses 50).
   * Range 0..100. */
  ILB_OPT_BREAKER_ERROR_PERCENT = 148,
  /* Range 1..1000000000, default 20. */
  ILB_OPT_BREAKER_MIN_REQUESTS = 149,
  /* Range 2..86400000, default 10000. */
  ILB_OPT_BREAKER_WINDOW_MS = 150,
  /* Range 1..86400000, default 30000. */
  ILB_OPT_BREAKER_OPEN_MS = 151,
  /* Range 1..65535, default 1. */
  ILB_OPT_BREAKER_HALF_OPEN_MAX = 152,
  /* Range 1..65535, default 3. */
  ILB_OPT_BREAKER_CLOSE_SUCCESSES = 153,

  /* Load shedding. The most requests the pool holds in flight: a pick
   * beyond it is ILB_ESHED. 0 = no limit (default). While it is set every
   * pick and completion updates one pool-wide counter; requests picked
   * while it was 0 are not counted. Range 0..16777216. */
  ILB_OPT_POOL_MAX_IN_FLIGHT = 154,
  /* A request of priority ILB_PRIORITY_SHEDDABLE is shed (ILB_ESHED) once
   * the pool holds this percentage of ILB_OPT_POOL_MAX_IN_FLIGHT (in flight
   * >= ceil(max * percent / 100)), so critical requests keep the rest.
   * Range 1..100, default 80. */
  ILB_OPT_SHED_PERCENT = 155,
  /* retry_after_ns of a shed or saturated pick when no replica has a
   * latency estimate yet (otherwise: the soonest expected completion, the
   * latency estimate / requests in flight of the replicas, plus up to 50%
   * jitter). Range 1..3600000, default 1000. */
  ILB_OPT_RETRY_AFTER_MS = 156,

  /* Retries (ilb_retry). Which failed outcomes are retried: an OR of enum
   * ilb_retry_on. Default CONNECT_ERROR | REFUSED | TIMEOUT: not HTTP
   * errors, which from a model server usually mean a bad input that
   * would fail again elsewhere and waste GPU time. Range 0..31. */
  ILB_OPT_RETRY_ON = 157,
  /* Most attempts per request, the first included. Range 1..8
   * (ILB_RETRY_TRIED_MAX), default 2 (one retry, Envoy's num_retries). */
  ILB_OPT_RETRY_MAX_ATTEMPTS = 158,
  /* Retry budget (Finagle, Linkerd): over the last 10 s, retries may be at
   * most this percentage of the requests plus ILB_OPT_RETRY_BUDGET_MIN_PER_S
   * per second. Requests are counted from pick counts sampled (at most
   * once a second) by ilb_next_due and ilb_retry; between two samples
   * they are taken to come at an even rate.
   * Range 0..100000, default 20 (Linkerd). */
  ILB_OPT_RETRY_BUDGET_PERCENT = 159,
  /* Range 0..1000000, default 10 (Linkerd's minRetriesPerSecond). */
  ILB_OPT_RETRY_BUDGET_MIN_PER_S = 160,
  /* Backoff before a retry: full jitter, a random 0..min(max, base *
   * 2^(retry - 1)) (Envoy's). Range 0..3600000, defaults 25 and 250. */
  ILB_OPT_RETRY_BACKOFF_BASE_MS = 161,
  ILB_OPT_RETRY_BACKOFF_MAX_MS = 162,

  /* --- prefix-cache-aware routing (since 0.5; ILB_POLICY_PREFIX) --------
   * See "Prefix-cache-aware routing" for the index, its memory and the
   * cost model. The prefix policy also uses ILB_OPT_HASH_BALANCE_FACTOR
   * (its load bound), ILB_OPT_TOKEN_OUTPUT_PERCENT and
   * ILB_OPT_TOKEN_DEFAULT_COST (a request's token cost), ILB_OPT_SCAN_MAX,
   * ILB_OPT_P2C_CHOICES and ILB_OPT_TIE_PERCENT (which candidates are
   * compared, and ties) and ILB_OPT_TELEMETRY_MAX_AGE_MS (queue depth). */

  /* Bytes per block when the library cuts ilb_request.prompt into blocks
   * (a last partial block is not a block: a server caches full blocks
   * only). Range 16..1048576, default 256 (about 64 tokens). */
  ILB_OPT_PREFIX_BLOCK_BYTES = 163,
  /* Tokens one block stands for: the block size of the host's
   * block_hashes (vLLM 16, the Mooncake traces 512), or about BLOCK_BYTES
   * / 4 for prompts. Range 1..1048576, default 64. */
  ILB_OPT_PREFIX_BLOCK_TOKENS = 164,
  /* The most blocks of one request looked up and recorded (the rest of a
   * longer prompt is not matched). Range 1..256, default 128. */
  ILB_OPT_PREFIX_MAX_BLOCKS = 165,
  /* The global cap: block entries in the index, each naming up to
   * ILB_PREFIX_HOLDERS replicas (rounded up to a whole number of 7-entry
   * buckets, a power of two of them: see "Prefix-cache-aware routing" for
   * the bytes). Changing it empties the index. Range 1024..16777216,
   * default 262144 (458752 entries, 20 MiB). */
  ILB_OPT_PREFIX_TABLE_BLOCKS = 166,
  /* A replica's KV-cache capacity in tokens when its telemetry does not
   * give one (ILB_SIGNAL_KV_BLOCKS_TOTAL x ILB_SIGNAL_KV_BLOCK_SIZE, which
   * wins when reported); divided by the block's tokens it is the per-
   * replica LRU capacity in blocks. Range 1..2^40, default 262144. */
  ILB_OPT_PREFIX_REPLICA_TOKENS = 167,
  /* Where the index learns what replicas hold, an enum ilb_prefix_mode.
   * Default ILB_PREFIX_ROUTED. */
  ILB_OPT_PREFIX_MODE = 168,
  /* Cost weights in percent: of one prompt token the candidate would have
   * to prefill (not in its matched prefix), of one token of cost in flight
   * on it (ILB_OPT_TOKEN_OUTPUT_PERCENT), and of one request waiting in its
   * queue by telemetry (counted as ILB_OPT_TOKEN_DEFAULT_COST tokens).
   * Range 0..100000 each, defaults 100, 25 and 100: most of a request in
   * flight is already prefilled, and delays a new prompt far less than
   * prefilling that prompt's prefix again (the fleet simulator's best on
   * the Mooncake trace, shared-prefix and multi-turn workloads; see the
   * README). */
  ILB_OPT_PREFIX_PREFILL_WEIGHT = 169,
  ILB_OPT_PREFIX_LOAD_WEIGHT = 170,
  ILB_OPT_PREFIX_QUEUE_WEIGHT = 171,
  /* The load bound's floor: a replica with fewer requests in flight than
   * this is never over the bound (at low load the bound, c times a small
   * average, would send a conversation's next turn away from its cache
   * for the sake of one request; servers batch a few requests almost for
   * free). Range 0..16777216, default 8; 0 = the bound alone, as chwbl. */
  ILB_OPT_PREFIX_BOUND_MIN = 172,

  /* Locality (since 0.6). Replicas carry a zone (ilb_replica_spec.zone),
   * requests may name theirs (ilb_request.zone). A request with a zone is
   * picked among the replicas of its zone, with the pool's policy, while
   * (a) the zone's available replicas hold at least
   * ILB_OPT_LOCALITY_MIN_HEALTHY_PERCENT of its weight, and (b) its
   * requests in flight per unit of available weight are within
   * ILB_OPT_LOCALITY_SPILL_PERCENT of the whole pool's counting this one
   * (so an idle pool keeps requests local); otherwise, or when no replica of its zone has room, among all
   * replicas (spillover). A request without a zone, or with one no
   * replica has, is picked among all. On: 1 (default), off: 0. The
   * per-zone tables are built when the pool's replicas name 2 or more
   * zones (zones: up to 64 per pool; replicas of further zones are
   * picked only in spillover), at the cost of one more policy table per
   * zone; a pick with a zone costs O(replicas) more (the share and load
   * check). */
  ILB_OPT_LOCALITY = 173,
  /* Range 0..100, default 70 (Envoy's default overprovisioning factor,
   * 1.4, spills at 71%); 0 = never spill for health. */
  ILB_OPT_LOCALITY_MIN_HEALTHY_PERCENT = 174,
  /* Range 100..100000, default 150; 100000 = never spill for load. */
  ILB_OPT_LOCALITY_SPILL_PERCENT = 175,

  /* Autoscaling signal (since 0.6; see ilb_pool_autoscale). */
  /* Requests in flight one replica should carry. Range 1..1000000,
   * default 8. */
  ILB_OPT_SCALE_TARGET_IN_FLIGHT = 176,
  /* Requests waiting (ILB_SIGNAL_REQUESTS_WAITING, fresh telemetry) one
   * replica should have at most. Range 1..1000000, default 5 (the
   * seeds' HPA averageValue). */
  ILB_OPT_SCALE_TARGET_QUEUE = 177,
  /* Utilisation the fleet should run at: arrival rate over service rate,
   * percent. Range 1..100, default 80. */
  ILB_OPT_SCALE_TARGET_UTILIZATION = 178,
  /* Stabilisation windows: a scale-up is recommended only as far as every
   * raw recommendation of the last UP_WINDOW asked for (the lowest of
   * them), a scale-down only as far as every one of the last DOWN_WINDOW
   * allowed (the highest). Range 0..86400000 ms, defaults 60000 (1 min)
   * and 300000 (5 min), the seeds' HPA behaviour: fast up, slow down. */
  ILB_OPT_SCALE_UP_WINDOW_MS = 179,
  ILB_OPT_SCALE_DOWN_WINDOW_MS = 180,
  /* Bounds of the recommendation. Range 0..1000000, defaults 1 and
   * 1000000. */
  ILB_OPT_SCALE_MIN_REPLICAS = 181,
  ILB_OPT_SCALE_MAX_REPLICAS = 182,

  /* Router options (since 0.6): ilb_router_set_option only; a pool
   * refuses them with ILB_EUNKNOWN. */
  /* Sticky sessions: entries in the session table (sessions remembered).
   * Range 0..16777216, default 65536;
   * 0 = no sticky sessions. Allocated when set: buckets of 5 entries,
   * 128 bytes, a power of two of them (25.6 to 51.2 bytes per entry, 2 MiB
   * at the default). */
  ILB_OPT_ROUTER_STICKY_ENTRIES = 200,
  /* A session not used for this long is forgotten (a use renews its
   * lease only when less than 3/4 of it is left, so that a busy session
   * seldom writes the table: it lives 3/4 TTL to TTL after its last use).
   * Range 1..604800000 ms (a week), default 1800000 (30 min). */
  ILB_OPT_ROUTER_STICKY_TTL_MS = 201,
  /* A session leaves its replica when that replica's requests in flight
   * reach ceil(this / 100 * (mean in flight of the pool's available
   * replicas, counting this request)), as in bounded-load hashing.
   * Range 100..100000 percent, default 200; 100000 = only when full. */
  ILB_OPT_ROUTER_STICKY_BOUND_PERCENT = 202,
  /* Prefill/decode pairs in flight at once (one table entry each, 32
   * bytes, allocated when the first ILB_ROLE_PREFILL pool is added; set
   * it before: afterwards a change is ILB_EBUSY). Range 64..16777216
   * (rounded up to a power of two), default 65536. */
  ILB_OPT_ROUTER_PAIRS_MAX = 203,
  /* Keys each rate limit remembers (buckets of 7 keys, 128 bytes, a
   * power of two of them: 18.3 to 36.6 bytes per key, 2 MiB at the
   * default). Range 64..16777216, default 65536. */
  ILB_OPT_ROUTER_RATE_KEYS = 204
};

/* Where the prefix index learns which replica holds which block:
 * ILB_OPT_PREFIX_MODE. */
enum ilb_prefix_mode {
  ILB_PREFIX_ROUTED = 0, /* from routing: a pick records that its replica
                            will hold the request's blocks (and from KV
                            events, when the host feeds them) (default) */
  ILB_PREFIX_EVENTS = 1  /* from KV events only (ilb_replica_kv_event):
                            precise, for hosts subscribed to the servers'
                            KV-cache events; a pick records no new block
                            but refreshes the records of the prefix it
                            matched on its replica (servers send no event
                            when they reuse a block) */
};

/* Private ticket entries per thread and pool (see ILB_OPT_MAX_IN_FLIGHT). */
#define ILB_THREAD_TICKETS 32

/* ilb_option_bounds - the range and default of an option. Every value in
 * the range is accepted except for ILB_OPT_POLICY (an ilb_policy_id) and
 * ILB_OPT_MAGLEV_TABLE_SIZE (0 or a prime).
 * Any out-pointer may be NULL. Errors: ILB_EUNKNOWN. Thread-safe. O(1). */
ILB_API int ilb_option_bounds(int64_t *min_out, int64_t *max_out,
                              int64_t *default_out, int32_t option);

/* ------------------------------------------------------------------------ */
/* Pool                                                                      */
/* ------------------------------------------------------------------------ */

/* A set of interchangeable replicas and the policy that chooses among them. */
typedef struct ilb_pool ilb_pool;

/* ilb_pool_new - create an empty pool with default options.
 * host may be NULL (all defaults); it is copied.
 * Errors: ILB_EINVAL (pool_out NULL, alloc/free not both set or both unset,
 * log_level outside ILB_LOG_NONE..ILB_LOG_DEBUG, reserved0 not 0),
 * ILB_ESIZE, ILB_ENOMEM.
 * Thread-safe. Allocates about 600 KiB with the default options (mostly the
 * ticket table: 8 bytes per ILB_OPT_MAX_IN_FLIGHT). */
ILB_API int ilb_pool_new(ilb_pool **pool_out, const ilb_host *host);

/* ilb_pool_free - free a pool and everything it owns. NULL is a no-op.
 * Outstanding tickets become invalid. Must not race with any other call on
 * the same pool. O(replicas + ticket table). */
ILB_API void ilb_pool_free(ilb_pool *pool);

/* ilb_pool_set_option - set an option (enum ilb_option).
 * Errors: ILB_EINVAL (pool NULL), ILB_EUNKNOWN (unknown option or policy),
 * ILB_ERANGE (value outside ilb_option_bounds), ILB_EBUSY, ILB_ENOMEM,
 * ILB_EDEADLK. Writer, publishes (cost: see the threading model);
 * ILB_OPT_MAX_IN_FLIGHT allocates a new ticket table instead. */
ILB_API int ilb_pool_set_option(ilb_pool *pool, int32_t option, int64_t value);

/* ilb_pool_get_option - read an option's current value.
 * Errors: ILB_EINVAL, ILB_EUNKNOWN. Thread-safe, lock-free. O(1). */
ILB_API int ilb_pool_get_option(int64_t *value_out, const ilb_pool *pool,
                                int32_t option);

/* ilb_pool_batch_begin / ilb_pool_batch_commit - group writes. Between them,
 * replica and option changes update the registry (and fire events) but picks
 * keep seeing the previous snapshot; the outermost commit publishes one new
 * snapshot. Batches nest (a counter); they are pool-wide, not per thread.
 * Errors: ILB_EINVAL (pool NULL, or commit without begin), ILB_ENOMEM (commit
 * could not build the snapshot: the batch stays open, retry the commit),
 * ILB_EDEADLK. Writer; begin is O(1), the outermost commit publishes when
 * anything changed (cost: see the threading model). */
ILB_API int ilb_pool_batch_begin(ilb_pool *pool);
ILB_API int ilb_pool_batch_commit(ilb_pool *pool);

/* ilb_pool_count - number of replicas in the pool (including any not yet
 * published by an open batch). Errors: ILB_EINVAL. Takes the pool mutex.
 * O(1). */
ILB_API int ilb_pool_count(size_t *count_out, ilb_pool *pool);

/* ------------------------------------------------------------------------ */
/* Replicas                                                                  */
/* ------------------------------------------------------------------------ */

/* Limits. */
#define ILB_ID_MAX 255            /* bytes in a replica id, zone, label */
#define ILB_WEIGHT_MAX 1000000u   /* weights are 1..ILB_WEIGHT_MAX */
#define ILB_LABELS_MAX 64         /* labels per replica */

/* A key=value string pair (replica labels, request attributes). */
typedef struct ilb_label {
  const char *key;
  const char *value;
} ilb_label;

/* Everything known about a replica when it is added. Strings are copied. */
typedef struct ilb_replica_spec {
  size_t struct_size;
  const char *id;          /* unique in the pool, 1..ILB_ID_MAX bytes */
  uint32_t weight;         /* 1..ILB_WEIGHT_MAX; default 1 */
  uint32_t capacity;       /* most requests in flight; 0 = unlimited (def.) */
  const char *zone;        /* may be NULL */
  const ilb_label *labels; /* n_labels entries; may be NULL when 0 */
  size_t n_labels;         /* 0..ILB_LABELS_MAX */
  void *host_data;         /* returned by picks and events; never touched */
} ilb_replica_spec;

/* ilb_replica_spec_init - zero *spec, set struct_size and defaults.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_replica_spec_init(ilb_replica_spec *spec);

/* ilb_replica_add - add a replica; it is eligible for picks once published
 * (at once, or at the batch commit). Fires ILB_EVENT_REPLICA_ADDED.
 * Errors: ILB_EINVAL (NULL, empty id, weight 0, NULL labels with n_labels >
 * 0, NULL or empty label key, NULL label value), ILB_ERANGE (weight >
 * ILB_WEIGHT_MAX),
 * ILB_ETOOBIG (id/zone/label longer than ILB_ID_MAX, too many labels),
 * ILB_EEXIST, ILB_ESIZE, ILB_ENOMEM, ILB_EDEADLK. Writer, publishes; O(1)
 * amortized plus the publish (none inside a batch). Allocates. */
ILB_API int ilb_replica_add(ilb_pool *pool, const ilb_replica_spec *spec);

/* ilb_replica_remove - remove a replica. Picks starting after this returns
 * never choose it. Its requests in flight may still complete: ilb_complete()
 * then releases the ticket and returns ILB_EREMOVED. Fires
 * ILB_EVENT_REPLICA_REMOVED. Errors: ILB_EINVAL, ILB_ENOENT, ILB_ENOMEM,
 * ILB_EDEADLK. Writer, publishes; O(replicas) plus the publish. */
ILB_API int ilb_replica_remove(ilb_pool *pool, const char *id);

/* ilb_replica_set_weight - change a replica's weight. Fires
 * ILB_EVENT_REPLICA_WEIGHT when the weight changes. Errors: ILB_EINVAL
 * (NULL, weight 0), ILB_ERANGE, ILB_ENOENT, ILB_ENOMEM, ILB_EDEADLK.
 * Writer, publishes; O(1) plus the publish. */
ILB_API int ilb_replica_set_weight(ilb_pool *pool, const char *id,
                                   uint32_t weight);

/* ilb_replica_set_available - the host's verdict on a replica (its own health
 * check, maintenance): available 0 takes it out of every policy's choice at
 * once, without rebuilding any table (hashing policies send its keys to each
 * key's next replica and back when it returns); 1 makes it eligible again.
 * Requests in flight on it are unaffected. State UNAVAILABLE in
 * ilb_replica_get. New replicas start available. Fires
 * ILB_EVENT_REPLICA_STATE when the state changes.
 * Errors: ILB_EINVAL (NULL, available not 0 or 1), ILB_ENOENT, ILB_EDEADLK.
 * Writer (takes the pool mutex) but does not publish; O(1), and since 0.4
 * O(replicas) for the panic check. Also inside a batch it takes effect at
 * once. */
ILB_API int ilb_replica_set_available(ilb_pool *pool, const char *id,
                                      int32_t available);

/* What ilb_replica_get reports. */
typedef struct ilb_replica_info {
  size_t struct_size;
  void *host_data;
  uint32_t weight;
  uint32_t capacity;
  int32_t state;        /* enum ilb_replica_state */
  uint32_t n_labels;
  int64_t in_flight;    /* picks not yet completed */
  uint64_t completed;   /* completions with any outcome (at the instant of
                           each 2^32nd completion it may read 2^32 low) */
  uint64_t failed;      /* completions with outcome CONNECT_ERROR, TIMEOUT,
                           HTTP_ERROR or (since 0.4) REFUSED: not OK, not
                           CANCELLED */
  /* since 0.3 */
  uint64_t tokens_in_flight; /* token cost of its requests in flight (see
                                ILB_POLICY_LEAST_TOKENS) */
  double latency_ewma_ms;    /* peak_ewma's latency estimate now (decayed),
                                -1 when it has no observation yet */
  /* since 0.4 */
  int32_t health;            /* enum ilb_health */
  int32_t breaker;           /* enum ilb_breaker */
  uint32_t excluded;         /* ILB_EXCLUDED_* bits: what keeps it out of
                                picks (0 = eligible; in a panic only
                                HOST, DRAINING and HEALTH of a replica
                                not ready yet do) */
  uint32_t ejections;        /* its ejection count n (see
                                ILB_OPT_OUTLIER_BASE_EJECTION_MS) */
  uint64_t errors;           /* completions counted as errors (see
                                ILB_OPT_OUTLIER_CONSECUTIVE_5XX) */
  uint32_t weight_percent;   /* effective weight in percent of weight:
                                < 100 during slow start */
  uint32_t reserved0;
} ilb_replica_info;

/* ilb_replica_get - current state of a replica. info->struct_size must be
 * set; on success it is set to the number of bytes written (min of the
 * caller's and the library's size). Counters are read atomically one by one,
 * not as one consistent snapshot. Errors: ILB_EINVAL, ILB_ESIZE, ILB_ENOENT.
 * Takes the pool mutex (not for the pick path). O(1). */
ILB_API int ilb_replica_get(ilb_replica_info *info, ilb_pool *pool,
                            const char *id);

/* ------------------------------------------------------------------------ */
/* Telemetry                                                                 */
/* ------------------------------------------------------------------------ */

/* What a replica's server says about itself, one signal per field. The host
 * fills it from its scrape of /metrics (see ilb_scrape below, which does it
 * for vLLM, SGLang, llama.cpp, Triton and TGI) or from anything else, and
 * reports it with ilb_replica_report(). Each signal has a bit in `present`
 * (ILB_SIGNAL_BIT(ILB_SIGNAL_...)); fields whose bit is clear are ignored
 * and keep their previous value. Each signal remembers when it was
 * measured and counts as unknown from the moment its age reaches
 * ILB_OPT_TELEMETRY_MAX_AGE_MS; a signal going stale takes out only its
 * own term of the composite score (up to four distinct report times per
 * replica are tracked; past that, the oldest ones expire together). */
enum ilb_signal {
  ILB_SIGNAL_REQUESTS_WAITING = 0, /* queued, not yet running; >= 0 */
  ILB_SIGNAL_REQUESTS_RUNNING = 1, /* in the running batch; >= 0 */
  ILB_SIGNAL_KV_CACHE_USAGE = 2,   /* fraction of KV-cache blocks used, 0..1 */
  ILB_SIGNAL_GPU_UTILIZATION = 3,  /* 0..1 */
  ILB_SIGNAL_GPU_MEMORY_FREE = 4,  /* bytes, >= 0 (<= total when both set) */
  ILB_SIGNAL_GPU_MEMORY_TOTAL = 5, /* bytes, >= 0 */
  ILB_SIGNAL_PREFIX_HIT_RATE = 6,  /* prefix-cache hits / queries, 0..1 */
  ILB_SIGNAL_GEN_TOKENS_PER_S = 7, /* generation throughput, >= 0 */
  ILB_SIGNAL_TTFT = 8,             /* mean time to first token, seconds */
  ILB_SIGNAL_QUEUE_TIME = 9,       /* mean time in queue, seconds */
  ILB_SIGNAL_REQUEST_RATE = 10,    /* requests finished per second, >= 0 */
  ILB_SIGNAL_MAX_CONCURRENCY = 11, /* slots / most requests in a batch */
  ILB_SIGNAL_MODEL_READY = 12,     /* 0 or 1 */
  ILB_SIGNAL_KV_BLOCK_SIZE = 13,   /* tokens per KV-cache block, >= 1 */
  ILB_SIGNAL_KV_BLOCKS_TOTAL = 14  /* KV-cache blocks on the GPU(s), >= 0 */
};
#define ILB_SIGNAL_COUNT 15
#define ILB_SIGNAL_BIT(s) (UINT64_C(1) << (s))
/* Every value must be finite, and at most ILB_SIGNAL_MAX unless the
 * range above is smaller. */
#define ILB_SIGNAL_MAX 1e18

typedef struct ilb_telemetry {
  size_t struct_size;
  uint64_t present;      /* ILB_SIGNAL_BIT()s of the fields that are set */
  uint64_t stale;        /* ilb_replica_telemetry: the present signals
                            whose age has reached the maximum; ignored on
                            input */
  uint64_t timestamp_ns; /* host clock when measured; 0 = now. Output: when
                            the oldest present signal was measured */
  double requests_waiting;
  double requests_running;
  double kv_cache_usage;
  double gpu_utilization;
  double gpu_memory_free;
  double gpu_memory_total;
  double prefix_hit_rate;
  double gen_tokens_per_s;
  double ttft_s;
  double queue_time_s;
  double request_rate;
  double max_concurrency;
  double model_ready;
  double kv_block_size;
  double kv_blocks_total;
} ilb_telemetry;

/* ilb_telemetry_init - zero *t (nothing present) and set struct_size.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_telemetry_init(ilb_telemetry *t);

/* ilb_signal_name - "requests_waiting", "kv_cache_usage", ... (the field
 * names above), or NULL for an unknown signal. Thread-safe. O(1). */
ILB_API const char *ilb_signal_name(int32_t signal);

/* ilb_replica_report - record the present signals of t for a replica.
 * All-or-nothing: a NaN, infinite, negative or out-of-range value (see
 * enum ilb_signal; a timestamp_ns in the future of the host clock; free
 * memory above total in the same report) fails the whole report and
 * leaves every old value in place. A report that gives only one of
 * gpu_memory_free / gpu_memory_total forgets a stored other one that
 * contradicts it. The composite policy uses the new values from the next
 * pick on (inside a batch: from its commit, with the batch's weights and
 * options; ilb_replica_telemetry shows them at once).
 * Errors: ILB_EINVAL (NULL, a present bit this version does not know),
 * ILB_ESIZE, ILB_ERANGE (a bad value; the pool's log says which at
 * ILB_LOG_DEBUG), ILB_ENOENT, ILB_EDEADLK. Writer (takes the pool mutex)
 * but does not publish. O(1). */
ILB_API int ilb_replica_report(ilb_pool *pool, const char *id,
                               const ilb_telemetry *t);

/* ilb_replica_telemetry - the signals last reported for a replica: present
 * = every signal reported (and not forgotten, see ilb_replica_report),
 * stale = those whose age has reached the maximum. t->struct_size must be
 * set; it is set to the bytes written.
 * Errors: ILB_EINVAL, ILB_ESIZE, ILB_ENOENT. Takes the pool mutex. O(1). */
ILB_API int ilb_replica_telemetry(ilb_telemetry *t, ilb_pool *pool,
                                  const char *id);

/* ------------------------------------------------------------------------ */
/* Scraping /metrics (Prometheus text exposition format 0.0.4)               */
/* ------------------------------------------------------------------------ */

/* Model servers whose metric names the parser maps to ilb_telemetry.
 *   vLLM      vllm:num_requests_waiting, vllm:num_requests_running,
 *             vllm:kv_cache_usage_perc (older: vllm:gpu_cache_usage_perc),
 *             vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total
 *             (older: vllm:gpu_prefix_cache_*; hit rate over the interval
 *             since the previous page), vllm:generation_tokens_total (rate),
 *             vllm:time_to_first_token_seconds (mean over the interval),
 *             vllm:cache_config_info labels block_size, num_gpu_blocks.
 *   SGLang    sglang:num_queue_reqs, sglang:num_running_reqs,
 *             sglang:token_usage, sglang:cache_hit_rate,
 *             sglang:gen_throughput, sglang:time_to_first_token_seconds.
 *   llama.cpp llamacpp:requests_processing, llamacpp:requests_deferred,
 *             llamacpp:predicted_tokens_seconds. Builds since May 2025
 *             export no KV-cache usage gauge, so kv_cache_usage is not
 *             present for them (older builds' llamacpp:kv_cache_usage_ratio
 *             is read when a page has it; nothing is estimated).
 *   Triton    nv_gpu_utilization, nv_gpu_memory_total_bytes,
 *             nv_gpu_memory_used_bytes, nv_inference_queue_duration_us and
 *             nv_inference_request_success (counters: mean queue time and
 *             request rate since the previous page), TensorRT-LLM
 *             nv_trt_llm_request_metrics (request_type "active" -> running,
 *             "waiting", "max" -> max_concurrency) and
 *             nv_trt_llm_kv_cache_block_metrics (used / max -> KV usage).
 *   TGI       tgi_queue_size, tgi_batch_current_size.
 * Series of one metric are summed (counts, bytes, throughput) or averaged
 * (fractions: KV usage, GPU utilisation), e.g. over GPUs or data-parallel
 * engines. A NaN sample leaves its signal out. Rates and interval means need two pages: the first page of an ilb_scrape
 * gives only the gauges. A counter that went down (server restart) starts
 * a new interval. */
enum ilb_dialect {
  ILB_DIALECT_AUTO = 0, /* the first recognised metric name decides */
  ILB_DIALECT_VLLM = 1,
  ILB_DIALECT_SGLANG = 2,
  ILB_DIALECT_LLAMACPP = 3,
  ILB_DIALECT_TRITON = 4,
  ILB_DIALECT_TGI = 5
};

/* ilb_dialect_name - "auto", "vllm", "sglang", "llamacpp", "triton", "tgi",
 * or NULL for an unknown value. Thread-safe. O(1). */
ILB_API const char *ilb_dialect_name(int32_t dialect);

/* Parser state for one replica's /metrics: the page being parsed and the
 * counters of the previous page. Keep one per replica. Not thread-safe:
 * one thread at a time per ilb_scrape. */
typedef struct ilb_scrape ilb_scrape;

typedef struct ilb_scrape_config {
  size_t struct_size;
  int32_t dialect;         /* enum ilb_dialect; default ILB_DIALECT_AUTO */
  int32_t reserved0;       /* must be 0 */
  /* Select one model on a server that serves several: series with label
   * label_key = label_value are used, series with label_key set to another
   * value are skipped, series without label_key (GPU-wide ones) are used.
   * label_key NULL = the dialect's model label ("model_name" for vLLM and
   * SGLang, "model" for Triton; TGI and llama.cpp serve one model).
   * label_value NULL = no filter. Copied by ilb_scrape_new. */
  const char *label_key;
  const char *label_value;
  /* Longest line accepted, in bytes (a longer one is ILB_EPARSE); also the
   * parser's buffer for a line split between two feeds. Range 256..16777216,
   * default 65536. */
  size_t line_max;
} ilb_scrape_config;

/* ilb_scrape_config_init - zero *cfg, set struct_size and the defaults.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_scrape_config_init(ilb_scrape_config *cfg);

/* ilb_scrape_new - a parser. cfg may be NULL (defaults); host may be NULL
 * (malloc/free, CLOCK_MONOTONIC).
 * Of host, only the allocator and the clock (ilb_scrape_finish with
 * timestamp 0) are used.
 * Errors: ILB_EINVAL (NULL out, reserved0 not 0, dialect unknown, host
 * invalid as for ilb_pool_new), ILB_ERANGE (line_max), ILB_ETOOBIG (label
 * longer than ILB_ID_MAX), ILB_ESIZE, ILB_ENOMEM. Allocates about line_max
 * bytes plus about 2 KiB, in one block; nothing more ever after. */
ILB_API int ilb_scrape_new(ilb_scrape **scrape_out,
                           const ilb_scrape_config *cfg, const ilb_host *host);

/* ilb_scrape_free - free a parser. NULL is a no-op. */
ILB_API void ilb_scrape_free(ilb_scrape *scrape);

/* ilb_scrape_feed - parse the next len bytes of the page. A page may be fed
 * in any number of pieces, split anywhere; no byte past data + len is read;
 * data need not be NUL-terminated (a NUL byte in it is ILB_EPARSE).
 * Accepted: "# HELP" / "# TYPE" / other comments, blank lines,
 * name{label="value",...} value [timestamp] with the escapes \\, \" and
 * \n in label values, NaN, +Inf, -Inf, and "# EOF"; lines end with "\n" or
 * "\r\n" (the "\r" counts towards line_max). After an error every further
 * feed of the page returns ILB_EPARSE (its bytes are ignored) until
 * ilb_scrape_finish reports it and starts a new page.
 * Errors: ILB_EINVAL (NULL scrape, data NULL with len > 0), ILB_EPARSE
 * (ilb_scrape_error tells the line and what). O(len). */
ILB_API int ilb_scrape_feed(ilb_scrape *scrape, const char *data, size_t len);

/* ilb_scrape_finish - end the page: fill *t with what it said (present bits
 * for the signals found; values clamped to the ranges of enum ilb_signal
 * -- a kv usage of 1.0001 is 1; NaN gauges are left out), make its counters
 * the "previous page" for the next rates, and get ready for the next page.
 * timestamp_ns: host clock when the page was fetched (rates divide by the
 * time between pages; 0 = read the clock of the host given to
 * ilb_scrape_new for them), copied to t->timestamp_ns as given (so 0 stays
 * 0: "now" for ilb_replica_report, on the pool's own clock). On
 * ILB_EPARSE the page is dropped, *t is untouched and the previous page's
 * counters are kept.
 * Errors: ILB_EINVAL (NULL), ILB_ESIZE, ILB_EPARSE, ILB_ENOENT (no metric
 * of the dialect found; t->present is then 0). O(1). */
ILB_API int ilb_scrape_finish(ilb_telemetry *t, ilb_scrape *scrape,
                              uint64_t timestamp_ns);

/* ilb_telemetry_parse - a whole page in one call: ilb_scrape_feed(text,
 * len) then ilb_scrape_finish(t, timestamp_ns), which runs also after a
 * feed error (so the scrape is ready for the next page). Returns what
 * they return: 0, ILB_EPARSE, ILB_ENOENT, ILB_EINVAL (NULL t or scrape,
 * text NULL with len > 0), ILB_ESIZE. O(len). */
ILB_API int ilb_telemetry_parse(ilb_telemetry *t, ilb_scrape *scrape,
                                const char *text, size_t len,
                                uint64_t timestamp_ns);

/* ilb_scrape_error - where the last ILB_EPARSE happened: 1-based line
 * number and a static description (e.g. "bad escape in label value").
 * Either out-pointer may be NULL. Errors: ILB_EINVAL (scrape NULL),
 * ILB_ENOENT (no error since ilb_scrape_new). O(1). */
ILB_API int ilb_scrape_error(uint64_t *line_out, const char **what_out,
                             const ilb_scrape *scrape);

/* ilb_scrape_dialect - the dialect in use: as configured, or as detected
 * (ILB_DIALECT_AUTO until a page has named a known metric).
 * Errors: ILB_EINVAL. O(1). */
ILB_API int ilb_scrape_dialect(int32_t *dialect_out, const ilb_scrape *scrape);

/* ------------------------------------------------------------------------ */
/* Picking and completing                                                    */
/* ------------------------------------------------------------------------ */

/* What the host knows about a request. All fields are optional. The
 * hashing policies (ring, maglev, rendezvous, chwbl) use key: any bytes the
 * host chooses (a session or user id, a client address, a header, a prompt
 * prefix), hashed with ilb_hash64(seed 0); key NULL or key_len 0 means "no
 * key" (ILB_OPT_HASH_NO_KEY). The key -> replica mapping for a given
 * membership, weights and options is part of the stable interface: it does
 * not change between library versions of the same major version (the hash
 * suite pins it), so gateways mid-upgrade agree. prompt_tokens and
 * output_tokens, when either is set, give the request a token cost (see
 * ILB_OPT_TOKEN_OUTPUT_PERCENT) counted on its replica until it completes,
 * under every policy; least_tokens routes on it (and gives requests without
 * estimates ILB_OPT_TOKEN_DEFAULT_COST). Pointers must stay valid during the
 * call; a Go binding passes the key as a cgo call argument to a C helper
 * that builds the request (C keeps no pointer; bindings/go does this),
 * pins it (runtime.Pinner, Go >= 1.21) or copies it to C memory.
 * block_hashes or prompt (since 0.5; used by ILB_POLICY_PREFIX, ignored by
 * the others): the prompt as a chain of block hashes computed by the host
 * (each one naming its block and every block before it, as vLLM's and the
 * Mooncake traces' are), or as text the library cuts into
 * ILB_OPT_PREFIX_BLOCK_BYTES blocks and hashes as a chain seeded with the
 * value of the attribute "model" (see "Prefix-cache-aware routing");
 * block_hashes wins when both are given. block_hashes NULL with n_blocks >
 * 0, prompt NULL with prompt_len > 0, or attrs NULL with n_attrs > 0 is
 * ILB_EINVAL under every policy (since 0.5). */
typedef struct ilb_request {
  size_t struct_size;
  const void *key;              /* affinity key bytes (session, user, ...) */
  size_t key_len;               /* 0 = no key; key may then be NULL */
  const uint64_t *block_hashes; /* prompt prefix block hashes, in order */
  size_t n_blocks;
  const char *prompt;           /* prompt text, not NUL-terminated */
  size_t prompt_len;
  uint32_t prompt_tokens;       /* estimated prompt tokens, 0 = unknown */
  uint32_t output_tokens;       /* estimated output tokens, 0 = unknown */
  const ilb_label *attrs;       /* request attributes (model, headers, ...) */
  size_t n_attrs;
  /* since 0.4 (a 0.3-sized request is accepted: priority CRITICAL) */
  int32_t priority;  /* enum ilb_priority; default ILB_PRIORITY_CRITICAL */
  int32_t reserved0; /* must be 0 */
  /* since 0.6 (0.3- to 0.5-sized requests are accepted: no zone) */
  const char *zone;  /* the client's zone, NUL-terminated; NULL = none.
                        See ILB_OPT_LOCALITY */
} ilb_request;

/* Request priorities for load shedding (ILB_OPT_SHED_PERCENT). */
enum ilb_priority {
  ILB_PRIORITY_CRITICAL = 0, /* shed only at the pool's limit (default) */
  ILB_PRIORITY_SHEDDABLE = 1 /* shed first: at ILB_OPT_SHED_PERCENT of the
                                pool's limit, and under composite when
                                every candidate is saturated */
};

/* ilb_request_init - zero *req and set struct_size.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_request_init(ilb_request *req);

/* The answer of ilb_pick. */
typedef struct ilb_pick_result {
  size_t struct_size;
  uint64_t ticket;          /* pass to ilb_complete; never 0 on success */
  const char *replica_id;   /* valid until the ticket is completed */
  void *host_data;          /* the replica's host_data */
  uint64_t retry_after_ns;  /* on failure: suggested wait, 0 = none */
} ilb_pick_result;

/* ilb_pick_result_init - zero *res and set struct_size.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_pick_result_init(ilb_pick_result *res);

/* ilb_pick - choose a replica for a request with the pool's policy, count it
 * in flight, and return it with a ticket. req may be NULL (no attributes).
 * Every success must be followed by exactly one ilb_complete() (or
 * ilb_retry()). Unavailable replicas (ilb_replica_set_available) are
 * never chosen, nor, since 0.4, replicas excluded by health, ejection, an
 * open breaker or a drain (but in a panic: see "Health and failure
 * handling").
 * Replicas at their capacity are skipped: the hashing policies go on in the
 * key's own order (should another thread fill that replica between the
 * choice and the count, to a random one with room), the others to a random
 * candidate with room; unless ILB_OPT_ALLOW_OVER_CAPACITY.
 * Errors: ILB_EINVAL (also, since 0.2 and under every policy, key NULL with
 * key_len > 0; since 0.4 an unknown priority or reserved0 not 0),
 * ILB_ESIZE,
 * ILB_ENOREPLICA (no replica in the pool, or none available: see
 * "Health and failure handling" for what excludes one), ILB_ESATURATED
 * (all available ones at capacity: not piled onto a full replica),
 * ILB_ESHED (since 0.4: the pool is at ILB_OPT_POOL_MAX_IN_FLIGHT, or a
 * sheddable request at ILB_OPT_SHED_PERCENT of it, or, under composite, a
 * sheddable request when every candidate with room is saturated: see
 * ILB_OPT_KV_SATURATION_PERCENT), ILB_ENOKEY (hashing
 * policy, no key, ILB_NO_KEY_ERROR), ILB_ETICKETS (ticket table full). On
 * error res->ticket is 0; on ILB_ESATURATED and ILB_ESHED
 * res->retry_after_ns says when to try again (ILB_OPT_RETRY_AFTER_MS),
 * which costs O(replicas) on that path.
 * Thread-safe, lock-free: no lock, allocation or system call (unless the
 * host's rand callback makes one; and see the threading model for a
 * thread's first pick). Not async-signal-safe: do not pick from a signal
 * handler that may interrupt a pick on the same thread. Cost: O(1) for
 * round_robin, weighted_round_robin, random, weighted_random, p2c and
 * maglev; O(log points) for ring; O(replicas) for least_conn,
 * weighted_least_request and rendezvous; chwbl O(1) while the key's home
 * replica has room, else O(replicas probed). The hashing policies also hash
 * the key: O(key_len). composite, peak_ewma and least_tokens: O(replicas)
 * up to ILB_OPT_SCAN_MAX of them, else O(ILB_OPT_P2C_CHOICES); composite
 * reads the host clock once when some replica has telemetry, peak_ewma
 * once; composite scans all replicas when every sampled one is saturated
 * (ILB_OPT_KV_SATURATION_PERCENT). prefix: O(blocks) plus as
 * composite's scan (see "Prefix-cache-aware routing"). When the chosen
 * replica is full or unavailable the search for another costs up to
 * O(replicas). */
ILB_API int ilb_pick(ilb_pick_result *res, ilb_pool *pool,
                     const ilb_request *req);

/* How a request ended. */
enum ilb_outcome_status {
  ILB_OUTCOME_OK = 0,            /* response delivered */
  ILB_OUTCOME_CONNECT_ERROR = 1, /* could not connect / reset before reply */
  ILB_OUTCOME_TIMEOUT = 2,       /* no (complete) answer in time */
  ILB_OUTCOME_HTTP_ERROR = 3,    /* answered with an error status */
  ILB_OUTCOME_CANCELLED = 4,     /* client went away; not the replica's fault */
  ILB_OUTCOME_REFUSED = 5        /* since 0.4: refused before any work was
                                    done (connection refused, HTTP/2
                                    REFUSED_STREAM): safe to retry */
};

/* Outcome of one request. Initialise with ilb_outcome_init(). */
typedef struct ilb_outcome {
  size_t struct_size;
  int32_t status;           /* enum ilb_outcome_status; default OK */
  int32_t http_status;      /* 0 = none, else 100..599 */
  uint64_t latency_ns;      /* end-to-end latency, 0 = unknown */
  uint64_t ttft_ns;         /* time to first token, 0 = unknown */
  uint32_t prompt_tokens;   /* actual tokens, 0 = unknown */
  uint32_t output_tokens;
} ilb_outcome;

/* ilb_outcome_init - zero *out, set struct_size, status ILB_OUTCOME_OK.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_outcome_init(ilb_outcome *out);

/* ilb_complete - finish the request of a ticket: it is no longer in flight.
 * outcome may be NULL (= ILB_OUTCOME_OK, nothing measured).
 * Since 0.4 the outcome also feeds passive health: outlier ejection and the
 * circuit breaker (see "Health and failure handling"); a completion that
 * ejects a replica or opens its breaker does so at once, and a draining
 * replica's last completion marks it drained.
 * Errors: ILB_EINVAL (pool NULL, bad status or http_status: nothing
 * changes, the ticket stays valid -- complete it again with a valid
 * outcome), ILB_ESIZE,
 * ILB_ESTALE (ticket 0, unknown, or already completed: nothing changes),
 * ILB_EREMOVED (its replica's removal was published -- at once, or at
 * the commit of its batch: the ticket is released and the outcome is not
 * recorded). The ticket is released on success and on
 * ILB_EREMOVED only. Latency: an outcome with latency_ns > 0, or a failure
 * (see ILB_OPT_EWMA_PENALTY_MS), updates the replica's latency estimate
 * (ILB_OPT_EWMA_DECAY_MS) under every policy except for CANCELLED
 * outcomes; that reads the host clock once. Thread-safe, lock-free: no lock,
 * allocation or system call (but the host's clock callback: the default,
 * CLOCK_MONOTONIC_COARSE, is read through the vDSO on Linux). O(1). */
ILB_API int ilb_complete(ilb_pool *pool, uint64_t ticket,
                         const ilb_outcome *outcome);

/* ------------------------------------------------------------------------ */
/* Health and failure handling (since 0.4)                                   */
/* ------------------------------------------------------------------------ */

/* The library never sends a probe and keeps no timer: the host probes the
 * replicas ilb_next_due() names, reports results with ilb_health_report(),
 * reports request outcomes with ilb_complete() / ilb_retry(), and calls
 * ilb_next_due() again by the deadline it returns. Everything runs on the
 * host clock (ilb_host.clock_ns).
 *
 * What keeps a replica out of picks, each a bit of ilb_replica_info.excluded
 * (a pick takes a replica only when none is set):
 *   HOST      ilb_replica_set_available(0)
 *   HEALTH    active health not HEALTHY (unknown, starting, unhealthy)
 *   EJECTED   passive outlier detection (ILB_OPT_OUTLIER_*)
 *   BREAKER   circuit breaker open (ILB_OPT_BREAKER_*); half-open only
 *             limits requests in flight to ILB_OPT_BREAKER_HALF_OPEN_MAX
 *   DRAINING  ilb_replica_drain
 * In a panic (ILB_OPT_PANIC_THRESHOLD_PERCENT) only HOST, DRAINING and
 * HEALTH of a replica not ready yet (UNKNOWN, STARTING) do.
 *
 * Which call does what: ilb_complete() (and ilb_retry(), which completes)
 * counts errors and ejects or opens a breaker at once, lock-free: the next
 * pick no longer takes the replica. ilb_next_due() is the pool's timer: it
 * ends ejections and open breakers whose time is up, runs the outlier
 * interval analysis, advances slow starts, checks drain deadlines and the
 * panic threshold, and delivers the events of what ilb_complete() did (so
 * those arrive at the next ilb_next_due(), with the time they happened).
 * A host that never calls it keeps ejected replicas out and open breakers
 * open. */

/* Active health of a replica. Readiness and liveness are kept apart: a
 * replica that answers "not ready" (loading its model: HTTP 503 from
 * llama.cpp's /health, vLLM before its engine is up) is STARTING -- alive,
 * not routable, not failed; one that fails ILB_OPT_HEALTH_FALL probes in a
 * row is UNHEALTHY -- not alive (a host may restart or replace it). Only
 * HEALTHY replicas are routable. */
enum ilb_health {
  ILB_HEALTH_UNKNOWN = 0,   /* no probe result yet (ILB_OPT_HEALTH_INITIAL) */
  ILB_HEALTH_HEALTHY = 1,   /* ready: takes requests */
  ILB_HEALTH_UNHEALTHY = 2, /* failed ILB_OPT_HEALTH_FALL probes in a row */
  ILB_HEALTH_STARTING = 3   /* alive, not ready yet */
};

/* A probe's result, as the host saw it. */
enum ilb_probe_result {
  ILB_PROBE_PASS = 0,      /* ready (e.g. HTTP 200 from /health) */
  ILB_PROBE_FAIL = 1,      /* no answer, connection refused, timeout, 5xx
                              other than "loading" */
  ILB_PROBE_NOT_READY = 2  /* alive but not ready (model loading) */
};

/* Circuit breaker states (ilb_replica_info.breaker, ILB_EVENT_BREAKER). */
enum ilb_breaker {
  ILB_BREAKER_CLOSED = 0,
  ILB_BREAKER_OPEN = 1,
  ILB_BREAKER_HALF_OPEN = 2
};

/* ilb_replica_info.excluded bits. */
enum ilb_excluded {
  ILB_EXCLUDED_HOST = 1,
  ILB_EXCLUDED_HEALTH = 2,
  ILB_EXCLUDED_EJECTED = 4,
  ILB_EXCLUDED_BREAKER = 8,
  ILB_EXCLUDED_DRAINING = 16
};

/* ilb_health_name - "unknown", "healthy", "unhealthy", "starting", or NULL
 * for another value. ilb_reason_name - "probe_passed", ... (the enum
 * ilb_reason names in lower case, "none" for 0), or NULL. ilb_breaker_name
 * - "closed", "open", "half_open", or NULL. Thread-safe. O(1). */
ILB_API const char *ilb_health_name(int32_t health);
ILB_API const char *ilb_reason_name(int32_t reason);
ILB_API const char *ilb_breaker_name(int32_t breaker);

/* ilb_health_report - record one probe result (enum ilb_probe_result) for a
 * replica, at the host clock's now. Transitions:
 *   PASS       UNKNOWN -> HEALTHY at once; STARTING, UNHEALTHY -> HEALTHY
 *              after ILB_OPT_HEALTH_RISE passes in a row.
 *   NOT_READY  UNKNOWN, UNHEALTHY -> STARTING at once (it is alive);
 *              HEALTHY -> STARTING after ILB_OPT_HEALTH_FALL non-passes in
 *              a row.
 *   FAIL       any -> UNHEALTHY after ILB_OPT_HEALTH_FALL failures in a
 *              row (a NOT_READY between them restarts that count: the
 *              replica answered, so it is alive); HEALTHY -> STARTING
 *              after ILB_OPT_HEALTH_FALL non-passes in a row that are not
 *              all failures.
 * A change fires ILB_EVENT_HEALTH, takes the replica out of or back into
 * picks at once, moves its next probe to the new state's interval, and
 * (back to HEALTHY) starts its slow start.
 * Errors: ILB_EINVAL (NULL, unknown result), ILB_ENOENT, ILB_EDEADLK.
 * Writer (takes the pool mutex); O(1), O(replicas) when the health
 * changes (the panic check), plus a publish when a slow start begins or
 * ends (the replica became healthy, or left HEALTHY while ramping) under
 * a policy that uses weights. */
ILB_API int ilb_health_report(ilb_pool *pool, const char *id,
                              int32_t result);

/* What ilb_next_due asks the host to do now. */
enum ilb_due_kind {
  ILB_DUE_PROBE = 1, /* probe the replica's health endpoint, then
                        ilb_health_report() */
  ILB_DUE_SCRAPE = 2 /* fetch its /metrics, then ilb_telemetry_parse() and
                        ilb_replica_report() */
};

/* One thing due. replica_id stays valid until the replica is removed. */
typedef struct ilb_due {
  const char *replica_id;
  void *host_data;
  int32_t kind;   /* enum ilb_due_kind */
  int32_t health; /* enum ilb_health, to choose the probe's timeout */
} ilb_due;

/* ilb_next_due - run the pool's timers (see above), deliver pending
 * events, and list what is due now: up to cap entries into due[], with
 * *n_due set to how many. due_size is sizeof(ilb_due) as the caller knows
 * it: the stride of due[], at least the 0.4 size (through `health`); each
 * entry is filled up to min(due_size, the library's size). due may be NULL
 * and due_size anything when cap is 0. A listed probe or scrape is
 * scheduled again one interval (plus jitter) later, whether or not the
 * host reports a result.
 * *next_ns_out: host-clock time at which to call again -- the earliest
 * next probe, scrape, ejection end, breaker timeout, outlier interval,
 * slow-start step or drain deadline (the outlier interval only while
 * success-rate or failure-percentage ejection is on or a replica has an
 * ejection count to decay); at most 1 s away while completions can change
 * something (an ejection or breaker threshold is set, or a drain is in
 * progress), so their events come within a second and their timers start;
 * at most one probe interval away in an empty pool with probes on; now
 * when more was due than cap; UINT64_MAX when nothing is scheduled.
 * Writer calls (a replica added, a probe result) can make something due
 * sooner: a host that sleeps until *next_ns_out calls again after them
 * when it wants them handled at once. next_ns_out may be NULL.
 * Errors: ILB_EINVAL (NULL pool or n_due, due NULL with cap > 0),
 * ILB_ESIZE (cap > 0 and due_size below the 0.4 size), ILB_EDEADLK. (A
 * slow-start step that cannot publish for want of memory is retried at
 * the next call.)
 * Writer (takes the pool mutex), O(replicas); publishes when a slow-start
 * step is due. */
ILB_API int ilb_next_due(ilb_due *due, size_t due_size, size_t cap,
                         size_t *n_due, uint64_t *next_ns_out,
                         ilb_pool *pool);

/* ilb_replica_drain - drain 1: no new picks take the replica (excluded
 * DRAINING), its requests in flight finish normally, and ILB_EVENT_DRAINED
 * fires when the last one completes (at the next ilb_next_due() when
 * ilb_complete() finished it, at once when none was in flight) -- or, with
 * timeout_ms > 0, when that much time has passed first (new_value = the
 * requests still in flight). drain 0 cancels a drain (no event).
 * The host removes the replica after ILB_EVENT_DRAINED if it wants to.
 * Errors: ILB_EINVAL (NULL, drain not 0 or 1), ILB_ERANGE (timeout_ms above
 * 2^32, about 50 days), ILB_ENOENT, ILB_EDEADLK.
 * Writer (takes the pool mutex), does not publish; starting a drain waits,
 * as a publish does, for the picks in progress (so that none is still
 * placing a request on the replica when it is reported drained): O(ticket
 * table) plus one membarrier(2), and O(replicas) for the panic check. */
ILB_API int ilb_replica_drain(ilb_pool *pool, const char *id, int32_t drain,
                              uint64_t timeout_ms);

/* Pool-wide health (ilb_pool_health). */
typedef struct ilb_pool_status {
  size_t struct_size;
  uint32_t replicas;   /* in the pool */
  uint32_t eligible;   /* none of the ILB_EXCLUDED_* bits set */
  uint32_t healthy;    /* active health HEALTHY */
  uint32_t ejected;
  uint32_t breakers_open; /* open (not half-open) */
  uint32_t draining;
  int32_t panic;       /* 1 while in panic */
  uint32_t reserved0;
  uint64_t in_flight;  /* requests in flight on its replicas */
  uint64_t retries;    /* retries granted by ilb_retry so far */
  uint64_t retries_denied_budget; /* refused by the retry budget */
  uint64_t shed;       /* picks refused with ILB_ESHED */
} ilb_pool_status;

/* ilb_pool_health - fill *st. st->struct_size must be set; it is set to
 * the bytes written. Errors: ILB_EINVAL, ILB_ESIZE. Takes the pool mutex.
 * O(replicas). */
ILB_API int ilb_pool_health(ilb_pool_status *st, ilb_pool *pool);

/* Retry conditions, ORed into ILB_OPT_RETRY_ON. */
enum ilb_retry_on {
  ILB_RETRY_ON_CONNECT_ERROR = 1, /* outcome CONNECT_ERROR */
  ILB_RETRY_ON_REFUSED = 2,       /* outcome REFUSED */
  ILB_RETRY_ON_TIMEOUT = 4,       /* outcome TIMEOUT */
  ILB_RETRY_ON_5XX = 8,           /* http_status >= 500, or HTTP_ERROR with
                                     http_status 0 */
  ILB_RETRY_ON_429 = 16           /* http_status 429 */
};

/* Most attempts one ilb_retry_state remembers (ILB_OPT_RETRY_MAX_ATTEMPTS). */
#define ILB_RETRY_TRIED_MAX 8

/* One request's attempts so far. Keep it with the request; initialise
 * with ilb_retry_state_init() after the first ilb_pick(). Its contents
 * are the library's. */
typedef struct ilb_retry_state {
  size_t struct_size;
  uint32_t attempts;                     /* picks made, the first included */
  uint32_t reserved0;
  uint64_t tried[ILB_RETRY_TRIED_MAX];   /* replicas tried (opaque) */
} ilb_retry_state;

/* ilb_retry_state_init - zero *st, set struct_size, attempts = 1.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_retry_state_init(ilb_retry_state *st);

/* ilb_retry's decision. */
enum ilb_retry_verdict {
  ILB_RETRY_YES = 0,           /* retry on ticket / replica_id after
                                  backoff_ns */
  ILB_RETRY_NOT_RETRYABLE = 1, /* success, cancelled, or a failure not in
                                  ILB_OPT_RETRY_ON */
  ILB_RETRY_ATTEMPTS = 2,      /* ILB_OPT_RETRY_MAX_ATTEMPTS reached */
  ILB_RETRY_BUDGET = 3,        /* the retry budget is spent */
  ILB_RETRY_NO_REPLICA = 4     /* the pick failed: see error,
                                  backoff_ns = its retry_after_ns */
};

typedef struct ilb_retry_result {
  size_t struct_size;
  int32_t verdict;        /* enum ilb_retry_verdict */
  int32_t error;          /* ILB_RETRY_NO_REPLICA: the pick's error code */
  uint64_t backoff_ns;    /* wait this long before sending */
  uint64_t ticket;        /* ILB_RETRY_YES: the new attempt's ticket,
                             else 0 */
  const char *replica_id; /* ILB_RETRY_YES: as ilb_pick_result */
  void *host_data;
} ilb_retry_result;

/* ilb_retry_result_init - zero *res and set struct_size.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_retry_result_init(ilb_retry_result *res);

/* ilb_retry - an attempt failed (or ended): complete its ticket with the
 * outcome (as ilb_complete(), so passive health sees it) and decide
 * whether to try again. When yes, pick the next replica for req -- never
 * one of this request's earlier attempts while another available replica
 * has room (when the policy's choice was tried before, the retry goes to
 * one of the others with room drawn uniformly) -- and return its ticket,
 * to be completed (or passed to
 * ilb_retry again) like any other. A retry counts against the pool's
 * budget (ILB_OPT_RETRY_BUDGET_PERCENT) and state->attempts. req may be
 * NULL, as for ilb_pick, and should be the request of the first pick.
 * Returns 0 with res->verdict set whenever the ticket was completed
 * (ILB_EREMOVED from the completion is not an error here), else:
 * ILB_EINVAL (NULL res, pool or state; bad outcome: the ticket stays
 * valid), ILB_ESIZE, ILB_ESTALE (ticket unknown or already completed:
 * nothing done).
 * Thread-safe. Lock-free but for the retry budget, a short pool-wide
 * critical section (its own mutex, not the writer's) taken only when the
 * outcome is retryable. Cost: ilb_complete + ilb_pick + O(attempts); a
 * pick that must avoid earlier replicas O(replicas). */
ILB_API int ilb_retry(ilb_retry_result *res, ilb_pool *pool,
                      ilb_retry_state *state, const ilb_request *req,
                      uint64_t ticket, const ilb_outcome *outcome);

/* ------------------------------------------------------------------------ */
/* Prefix-cache-aware routing (since 0.5)                                    */
/* ------------------------------------------------------------------------ */

/* ILB_POLICY_PREFIX sends a request where the KV cache of its prompt's
 * longest prefix probably is, unless that replica is too busy for the
 * saving to pay, so hot prefixes spread instead of piling up.
 *
 * The prompt is a chain of blocks (ilb_request.block_hashes, or .prompt
 * cut into ILB_OPT_PREFIX_BLOCK_BYTES blocks: h[0] = XXH64(block 0, seed
 * XXH64(model)), h[i] = XXH64(block i, seed h[i-1]); "model" is the value
 * of the request attribute with that key, "" when none). At most
 * ILB_OPT_PREFIX_MAX_BLOCKS blocks count. Hashes of prompt text never
 * equal a server's own block hashes (computed over tokens): KV events
 * (ILB_PREFIX_EVENTS especially) need block_hashes computed as the server
 * computes them, reduced to 64 bits the same way on both sides (vLLM's
 * hashes are bytes or integers depending on its version: take, say, their
 * first 8 bytes).
 *
 * The index maps a block hash to up to ILB_PREFIX_HOLDERS replicas
 * believed to hold it. It learns from routing (ILB_PREFIX_ROUTED: each
 * pick records its replica as a holder of the request's blocks) and from
 * the servers' KV-cache events fed by the host (ilb_replica_kv_event).
 * Its memory is fixed when the policy is chosen: ILB_OPT_PREFIX_TABLE_BLOCKS
 * entries of 8 bytes of hash and 8 per holder, in buckets of 7 entries
 * and a lock word, 320 bytes a bucket, plus a 64-byte header:
 *   bytes = 320 * 2^ceil(log2(ceil(TABLE_BLOCKS / 7))) + 64  (~46 an entry)
 * (20 MiB at the default, 1.25 GiB at the maximum), never more, whatever
 * the traffic; a full bucket reuses an entry whose holders have all
 * expired, else evicts, of two of its entries drawn by the new block's
 * hash, the one whose holders expire sooner. Each replica is an LRU of
 * capacity C blocks (ILB_OPT_PREFIX_REPLICA_TOKENS, or the KV capacity its
 * telemetry reports, over the block's tokens; at most 2^24): a record
 * expires once C newer records were made on that replica. A record
 * refreshed by a request is moved to the front only when older than C/4
 * (so repeated hot prefixes cost no writes): a block lives at least 3C/4
 * and at most C records after its last use. A KV event's STORED blocks
 * are recorded as a request's are (the first newest, a young record left
 * as it is). A replica's records all expire at once when it is removed
 * (when the removal is published: at the end of a batch), marked
 * unhealthy or not ready by active health (a restart loses the cache), or
 * cleared by a KV event.
 * A pick looks up the request's blocks in order, stopping at the first
 * block no replica holds; a replica's match is its deepest held block
 * (servers evict a sequence's tail first, so it holds the blocks before).
 *
 * The cost of a candidate (lower wins, ties within ILB_OPT_TIE_PERCENT at
 * random) is, divided by its weight:
 *   PREFILL% * (prompt tokens - its matched blocks * block tokens)
 *   + LOAD% * (token cost in flight on it)
 *   + QUEUE% * (requests waiting on it by telemetry) * TOKEN_DEFAULT_COST
 * (block tokens: ILB_OPT_PREFIX_BLOCK_TOKENS; prompt tokens:
 * ilb_request.prompt_tokens, else blocks x block tokens).
 * Bound: a candidate with in_flight >= max(ceil(c * (T + 1) * w / W),
 * ILB_OPT_PREFIX_BOUND_MIN) -- T the requests in flight the policy placed,
 * W the available weight, c = ILB_OPT_HASH_BALANCE_FACTOR / 100, as chwbl
 * -- is skipped even when it holds the prefix, so one hot prefix never
 * takes more than c times the average load (once the pool is busy enough
 * for that average to pass the floor). A prompt that matches nowhere goes
 * to the cheapest (least-loaded) candidate with room, never to a full one.
 * A request without blocks is costed as a prompt that matches nowhere.
 *
 * Pick cost: O(blocks) -- each block's bucket is prefetched, looked up
 * (ILB_PREFIX_HOLDERS holders) and, for the replica picked, recorded (a
 * compare-and-swap on its bucket's lock word, typically 15 and at most 36
 * holder checks when the bucket is full) -- plus the candidates compared (every one up to
 * ILB_OPT_SCAN_MAX, else ILB_OPT_P2C_CHOICES sampled, plus the holders
 * found); O(prompt_len + n_attrs + the model's length) to hash a prompt;
 * one host clock read when some replica has a fresh queue depth. No lock,
 * allocation or system call: an update that finds its bucket's lock word
 * taken by another thread is dropped (ilb_prefix_stats.dropped), a lookup
 * that finds it taken retries a few times, then counts the block as held
 * by nobody.
 *
 * Limits. A pick records its replica before the outcome is known: a
 * request refused or never sent still leaves that replica as a holder (its
 * records expire as any). Positions are 43-bit: a slot forgotten about
 * 2^19 times with records made in between (removals and re-adds, health
 * flaps, CLEARED events; a capacity growth counts as one) wraps, and a
 * record older than that which still sits in the table may then look
 * young, for whichever replica holds the slot then. Switching ILB_OPT_PREFIX_MODE keeps what the index knows (records
 * learnt from routing stay until they expire); changing
 * ILB_OPT_PREFIX_BLOCK_BYTES or the model orphans the records of prompt
 * text; inside a batch, a switch to prefix takes effect (and the index
 * exists for ilb_replica_kv_event and ilb_pool_prefix_stats) at the commit.
 * The statistics counters are per thread and approximate beyond 64
 * picking threads, and across an index reset under traffic. */

/* Replicas one index entry names at most. */
#define ILB_PREFIX_HOLDERS 4

/* A server's KV-cache event (vLLM publishes them as BlockStored,
 * BlockRemoved and AllBlocksCleared). */
enum ilb_kv_event_type {
  ILB_KV_STORED = 1,  /* the replica now holds these blocks */
  ILB_KV_REMOVED = 2, /* it evicted these blocks */
  ILB_KV_CLEARED = 3  /* it holds nothing (cache reset, restart) */
};

/* ilb_kv_event.flags */
#define ILB_KV_RESTART 1u /* the publisher restarted: forget what the index
                             knows of this replica first, and take seq as
                             the new baseline even if lower */

/* One KV-cache event. Initialise with ilb_kv_event_init(). */
typedef struct ilb_kv_event {
  size_t struct_size;
  int32_t type;                 /* enum ilb_kv_event_type */
  uint32_t flags;               /* ILB_KV_RESTART or 0 */
  /* The publisher's sequence number (vLLM: the event batch's); events of
   * one batch share it. 0 = unordered: always applied. Otherwise an event
   * with seq below the last one applied for this replica is stale. */
  uint64_t seq;
  const uint64_t *block_hashes; /* STORED and REMOVED: the blocks, in the
                                   prompt's order (same hashes as
                                   ilb_request.block_hashes) */
  size_t n_blocks;
} ilb_kv_event;

/* ilb_kv_event_init - zero *ev and set struct_size.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_kv_event_init(ilb_kv_event *ev);

/* ilb_replica_kv_event - apply a KV-cache event of replica id to the
 * pool's prefix index (ILB_POLICY_PREFIX, any ILB_OPT_PREFIX_MODE).
 * Errors: ILB_EINVAL (NULL pool, id or ev; unknown type or flags;
 * block_hashes NULL with n_blocks > 0; the pool's policy is not prefix:
 * it has no index), ILB_ESIZE, ILB_ENOENT (no such replica), ILB_ESTALE
 * (seq below the last applied one and no ILB_KV_RESTART: nothing changes),
 * ILB_EDEADLK (called from a callback of the same pool).
 * Thread-safe; takes the pool mutex, and waits briefly for buckets a pick
 * is updating. O(n_blocks * ILB_PREFIX_HOLDERS). */
ILB_API int ilb_replica_kv_event(ilb_pool *pool, const char *id,
                                 const ilb_kv_event *ev);

/* What the prefix index holds and has done (ilb_pool_prefix_stats).
 * Counters count since the policy was chosen or the index was emptied. */
typedef struct ilb_prefix_stats {
  size_t struct_size;
  uint64_t entries;        /* block entries with at least one holder */
  uint64_t capacity;       /* entries the index can hold */
  uint64_t memory_bytes;   /* bytes allocated for the index */
  uint64_t lookups;        /* picks that carried blocks */
  uint64_t blocks;         /* blocks those picks looked up */
  uint64_t matched_blocks; /* of them, in the matched prefix of the
                              replica picked: matched / blocks is the
                              index's predicted cache hit rate */
  uint64_t recorded;       /* (block, replica) records written */
  uint64_t evicted;        /* entries evicted by the global cap */
  uint64_t dropped;        /* updates skipped: bucket busy */
  uint64_t events;         /* KV events applied */
  uint64_t stale_events;   /* KV events refused as stale */
} ilb_prefix_stats;

/* ilb_pool_prefix_stats - fill *st. st->struct_size must be set; it is set
 * to the bytes written. Errors: ILB_EINVAL (NULL; the pool's policy is not
 * prefix), ILB_ESIZE, ILB_EDEADLK (called from a callback of the same
 * pool). Takes the pool mutex -- which writers (adds, reports, options)
 * wait for -- for O(TABLE_BLOCKS) (counting the live entries: 3.4 ms
 * at the default size), so poll it at the pace of a metrics scrape, not
 * per request. */
ILB_API int ilb_pool_prefix_stats(ilb_prefix_stats *st, ilb_pool *pool);

/* ------------------------------------------------------------------------ */
/* Traffic: a router over pools (since 0.6)                                  */
/* ------------------------------------------------------------------------ */

/* A router holds pools, each serving one model at one version, and decides
 * which pool a request goes to; the pool's own policy then picks the
 * replica. In order, ilb_router_pick:
 *   1. evaluates the routes (ilb_router_set_routes) in order: the first
 *      whose matches all hold names the pool, or splits between pools by
 *      weight (canary, blue-green, A/B); a route without matches matches
 *      every request (a default route, placed last);
 *   2. when no route matches, routes by model: the request attribute
 *      "model" names the model, and its pools (roles BOTH or DECODE)
 *      share its requests by their weights (ilb_router_pool_spec.weight);
 *      a request whose model no pool serves, or without a model when no
 *      route matched, fails with ILB_ENOMODEL -- never a random pool;
 *   3. checks the rate limits (ilb_router_set_rate_limits): over one,
 *      ILB_ERATELIMIT with retry_after_ns, the time until its next token;
 *   4. with a session (the request's affinity key) and sticky sessions on
 *      (ILB_OPT_ROUTER_STICKY_ENTRIES), returns the session's replica in
 *      that pool unless it is gone, excluded (unhealthy, ejected, breaker
 *      open, draining, taken out by the host), full, or over the bound
 *      (ILB_OPT_ROUTER_STICKY_BOUND_PERCENT); else picks with the pool's
 *      policy and remembers the replica for the session;
 *   5. a DECODE pool's pick is a prefill/decode pair: first the prefill
 *      replica, in the PREFILL pool of the same model and version (its
 *      policy should weigh prefix reuse and prefill load: prefix), then
 *      the decode replica (least_tokens suits it), under one ticket (no
 *      such PREFILL pool: ILB_ENOMODEL); sticky sessions apply to the
 *      decode half;
 *   6. a route with a mirror also picks a replica of the mirror pool for
 *      a copy of the request (mirror_percent of the requests); the host
 *      sends the copy, ignores its answer, and completes mirror_ticket.
 * Locality (ILB_OPT_LOCALITY) applies inside each pool.
 *
 * Splits: with an affinity key, a request's side of a split is fixed by
 * the key's hash while the route's weights stay the same (a conversation
 * does not flip between versions; moving weight from one backend to the
 * next only moves keys across that boundary); without a key it is drawn
 * at random with the weights' odds. A backend of weight 0 takes nothing.
 *
 * Tickets: a router ticket is its pool's ticket, so ilb_complete(pool,
 * ticket) and ilb_router_complete(router, ticket) both complete it --
 * except a prefill/decode pair's, which only the router completes (both
 * halves, once). A pool belongs to one router in its life (its tickets
 * then name it; it may leave and come back under its own name), and a
 * router holds at most ILB_ROUTER_POOLS_MAX pools over its life.
 *
 * Threads: ilb_router_pick and ilb_router_complete are lock-free (no lock,
 * allocation or system call; a sticky session update that finds its
 * table bucket busy is skipped); the other router calls are writers
 * serialised by the router's mutex (ilb_router_set_routes,
 * ilb_router_set_weights, ilb_router_set_rate_limits and a change of
 * ILB_OPT_ROUTER_STICKY_ENTRIES also wait until no pick reads what they
 * replace: never call them from the host's clock or rand callback, which
 * run inside a pick). Picks are not async-signal-safe. Strings a result
 * returns: model and version stay valid until ilb_router_free, replica
 * ids until the ticket is completed. */

/* A router: an opaque handle. */
typedef struct ilb_router ilb_router;

/* Pools a router can hold over its life. */
#define ILB_ROUTER_POOLS_MAX 126
/* Backends of a route, matches of a route, routes and rate limits. */
#define ILB_ROUTE_BACKENDS_MAX 16
#define ILB_ROUTE_MATCHES_MAX 16
#define ILB_ROUTES_MAX 1024
#define ILB_RATE_LIMITS_MAX 16

/* What a pool does in a prefill/decode split. */
enum ilb_pool_role {
  ILB_ROLE_BOTH = 0,    /* serves whole requests (default) */
  ILB_ROLE_PREFILL = 1, /* the prefill half of a DECODE pool's requests;
                           never a route's or model's target itself */
  ILB_ROLE_DECODE = 2   /* the decode half: each pick is a pair with the
                           PREFILL pool of the same model and version */
};

/* A pool as the router knows it. Strings are copied. */
typedef struct ilb_router_pool_spec {
  size_t struct_size;
  const char *model;       /* 1..ILB_ID_MAX bytes */
  const char *version;     /* 0..ILB_ID_MAX bytes; NULL = "" */
  const ilb_label *labels; /* n_labels entries, kept for the host (a
                              router decides by model and version) */
  size_t n_labels;         /* 0..ILB_LABELS_MAX */
  uint32_t weight;         /* its share of its model's requests when no
                              route matches: 0..ILB_WEIGHT_MAX, default 1 */
  int32_t role;            /* enum ilb_pool_role, default ILB_ROLE_BOTH */
} ilb_router_pool_spec;

/* ilb_router_pool_spec_init - zero *spec, set struct_size and defaults.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_router_pool_spec_init(ilb_router_pool_spec *spec);

/* ilb_router_new - create a router without pools or routes. host may be
 * NULL; it is copied (its clock, random generator, allocator and log
 * serve the router; each pool keeps its own).
 * Errors: ILB_EINVAL, ILB_ESIZE, ILB_ENOMEM. Thread-safe. */
ILB_API int ilb_router_new(ilb_router **router_out, const ilb_host *host);

/* ilb_router_free - free the router and drop its references to its pools
 * (a pool the host has already freed with ilb_pool_free is freed now).
 * NULL is a no-op. Must not race with any other call on the router. */
ILB_API void ilb_router_free(ilb_router *router);

/* ilb_router_set_option / ilb_router_get_option - the ILB_OPT_ROUTER_*
 * options (bounds from ilb_option_bounds). Errors: ILB_EINVAL,
 * ILB_EUNKNOWN (not a router option), ILB_ERANGE, ILB_EBUSY, ILB_ENOMEM. Changing
 * ILB_OPT_ROUTER_STICKY_ENTRIES forgets every session; a change of
 * ILB_OPT_ROUTER_RATE_KEYS applies to limits created afterwards; a change
 * of ILB_OPT_ROUTER_PAIRS_MAX once the pair table exists is ILB_EBUSY.
 * Writer. */
ILB_API int ilb_router_set_option(ilb_router *router, int32_t option,
                                  int64_t value);
ILB_API int ilb_router_get_option(int64_t *value_out,
                                  const ilb_router *router, int32_t option);

/* ilb_router_add_pool - add a pool under (model, version). The router
 * takes a reference: ilb_pool_free by the host then only drops the host's
 * (the pool lives until the router lets it go too), so the two may be
 * freed in either order. Errors: ILB_EINVAL (NULL, empty model, unknown
 * role, NULL labels with n_labels > 0, NULL or empty label key, NULL
 * label value), ILB_ERANGE (weight), ILB_ETOOBIG (a string longer than
 * ILB_ID_MAX, too many labels, ILB_ROUTER_POOLS_MAX pools added already),
 * ILB_EEXIST ((model, version) taken -- by another PREFILL pool for a
 * PREFILL pool, which shares its name with its DECODE pool, else by a
 * pool of role BOTH or DECODE), ILB_EBUSY (the pool is in a
 * router, or was in another one, or in this one under another name: a
 * removed pool comes back only under its own name, with a new spec),
 * ILB_ESIZE, ILB_ENOMEM. Tickets the pool issued before it joined
 * complete only through the pool. Writer. */
ILB_API int ilb_router_add_pool(ilb_router *router,
                                const ilb_router_pool_spec *spec,
                                ilb_pool *pool);

/* ilb_router_remove_pool - stop routing to (model, version); version NULL
 * = "" (both pools of a prefill/decode pair when they share the name). Its
 * requests in flight still complete through the router. Routes
 * that name it keep their place; picks that resolve to it fail with
 * ILB_ENOMODEL until it is added again or the routes change.
 * Errors: ILB_EINVAL, ILB_ENOENT. Writer. */
ILB_API int ilb_router_remove_pool(ilb_router *router, const char *model,
                                   const char *version);

/* How a route's match compares a request attribute (ilb_request.attrs;
 * the first attribute with the key counts). */
enum ilb_match_kind {
  ILB_MATCH_EXACT = 1,   /* its value equals value */
  ILB_MATCH_PREFIX = 2,  /* its value starts with value */
  ILB_MATCH_PRESENT = 3, /* the request has the attribute (value unused) */
  ILB_MATCH_ABSENT = 4   /* it does not (value unused) */
};

/* One condition on a request attribute. Headers, the path (":path"), the
 * model: whatever the host puts in ilb_request.attrs. Compared
 * byte for byte (lower-case header names on both sides). */
typedef struct ilb_match {
  const char *key;   /* 1..ILB_ID_MAX bytes */
  const char *value; /* EXACT, PREFIX: 0..ILB_ID_MAX bytes; else NULL */
  int32_t kind;      /* enum ilb_match_kind */
  int32_t reserved0; /* must be 0 */
} ilb_match;

/* A route's target: a pool, by model and version. model NULL means the
 * request's own model (its "model" attribute): one route can then send
 * "version v2" of whichever model is asked for. */
typedef struct ilb_backend {
  const char *model;   /* NULL = the request's model */
  const char *version; /* NULL = "" */
  uint32_t weight;     /* 0..ILB_WEIGHT_MAX; a split's odds */
  uint32_t reserved0;  /* must be 0 */
} ilb_backend;

/* One route. Initialise with ilb_route_init(). */
typedef struct ilb_route {
  size_t struct_size;
  const char *name;             /* 1..ILB_ID_MAX bytes, unique: for
                                   ilb_router_set_weights and the stats */
  const ilb_match *matches;     /* all must hold; none = every request */
  size_t n_matches;             /* 0..ILB_ROUTE_MATCHES_MAX */
  const ilb_backend *backends;  /* one pool, or a weighted split */
  size_t n_backends;            /* 1..ILB_ROUTE_BACKENDS_MAX */
  const char *mirror_model;     /* a pool to mirror requests to; NULL none
                                   (NULL model with a version: not
                                   allowed here) */
  const char *mirror_version;   /* NULL = "" */
  uint32_t mirror_percent;      /* 0..100 of the route's requests */
  uint32_t reserved0;           /* must be 0 */
  /* The size of one element of matches and of backends, so that those
   * structs can grow: ilb_route_init sets sizeof(ilb_match) and
   * sizeof(ilb_backend); another value is ILB_ESIZE. */
  size_t match_size;
  size_t backend_size;
} ilb_route;

/* ilb_route_init - zero *route, set struct_size, match_size and
 * backend_size.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_route_init(ilb_route *route);

/* ilb_router_set_routes - replace the route table with n routes, at once:
 * a pick sees the old table or the new one, never a mix. A route may name
 * pools not added yet (picks resolving to them fail with ILB_ENOMODEL).
 * n = 0 removes every route (model routing only). A route that keeps its
 * name keeps the pick counters (ilb_stats_prometheus) of the backends
 * that keep their place and pool.
 * Errors: ILB_EINVAL (router NULL, routes NULL with n > 0, a NULL or
 * empty name or key, an unknown match kind, a value NULL where needed or
 * given where not, reserved fields not 0, no backend, every backend of
 * weight 0, mirror_percent > 100, mirror_version without mirror_model),
 * ILB_ERANGE (a weight), ILB_ETOOBIG (too many routes, matches or
 * backends; a string too long), ILB_EEXIST (two routes with one name),
 * ILB_ESIZE (struct_size, match_size or backend_size), ILB_ENOMEM. On error the old table stays. Writer: waits
 * until no pick reads the old table. */
ILB_API int ilb_router_set_routes(ilb_router *router, const ilb_route *routes,
                                  size_t n);

/* ilb_router_set_weights - set the weights of route name's backends (n =
 * its number of backends), at once: a pick sees all the old weights or
 * all the new ones. Canary steps (95/5, then 80/20, ...) use this.
 * Errors: ILB_EINVAL (NULL; n not the route's backend count; every weight
 * 0), ILB_ENOENT (no such route), ILB_ERANGE. Writer. */
ILB_API int ilb_router_set_weights(ilb_router *router, const char *name,
                                   const uint32_t *weights, size_t n);

/* A rate limit: GCRA (the generic cell rate algorithm, equivalent to a
 * token bucket of `burst` tokens refilled at rate / period). Each distinct
 * key has its own bucket. Initialise with ilb_rate_limit_init(). */
typedef struct ilb_rate_limit {
  size_t struct_size;
  const char *name;     /* 1..ILB_ID_MAX bytes, unique (stats) */
  /* Where the key comes from: the value of this request attribute
   * ("x-api-key", "tenant", "model"; a request without it is not limited
   * by this limit); NULL = the request's affinity key (none: not
   * limited); "" = one key for every request (a global limit). */
  const char *key_attr;
  uint64_t rate;        /* requests per period, >= 1 */
  uint64_t period_ms;   /* 1..86400000; default 1000 */
  uint64_t burst;       /* bucket size, 1..rate * 1000; default 1 */
} ilb_rate_limit;

/* ilb_rate_limit_init - zero *limit, set struct_size and defaults.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_rate_limit_init(ilb_rate_limit *limit);

/* ilb_router_set_rate_limits - replace the rate limits with n limits
 * (every request is checked against all of them, after its pool is
 * resolved, so a "model" key sees the routed model). A limit that keeps
 * its name, key_attr, rate, period and burst keeps its buckets; others
 * start full. Each limit remembers ILB_OPT_ROUTER_RATE_KEYS keys: a new
 * key in a full table takes the place of a key whose bucket is full again
 * (nothing is lost), else of the one closest to full (which then gets a
 * fresh burst: counted in the stats as evicted). A request refused by a
 * later limit, or by the pick, gives back the tokens it took.
 * Errors: ILB_EINVAL (NULL, a NULL or empty name, rate 0, period or burst
 * out of range), ILB_EEXIST (two limits with one name), ILB_ETOOBIG (more
 * than ILB_RATE_LIMITS_MAX; a string too long), ILB_ESIZE, ILB_ENOMEM.
 * Writer. */
ILB_API int ilb_router_set_rate_limits(ilb_router *router,
                                       const ilb_rate_limit *limits,
                                       size_t n);

/* The answer of ilb_router_pick. */
typedef struct ilb_route_result {
  size_t struct_size;
  uint64_t ticket;           /* never 0 on success */
  const char *replica_id;    /* the replica (for a pair: decode) */
  void *host_data;
  uint64_t retry_after_ns;   /* on failure: suggested wait, 0 = none */
  ilb_pool *pool;            /* the pool it is in */
  const char *model;         /* that pool's model and version */
  const char *version;
  int32_t route;             /* index of the route that matched, -1 =
                                routed by model */
  int32_t backend;           /* index of the route's backend, -1 */
  /* A pair (the pool's role is DECODE): the prefill replica; else NULL. */
  const char *prefill_replica_id;
  void *prefill_host_data;
  ilb_pool *prefill_pool;
  /* Mirroring: a replica of the route's mirror pool for a copy of the
   * request, or NULL (no mirror, not this request, or the mirror pick
   * failed -- which never fails the request). Complete mirror_ticket
   * like any ticket. */
  uint64_t mirror_ticket;
  const char *mirror_replica_id;
  void *mirror_host_data;
  ilb_pool *mirror_pool;
  int32_t sticky;            /* 1: the session's replica was reused */
  int32_t reserved0;
} ilb_route_result;

/* ilb_route_result_init - zero *res and set struct_size.
 * Errors: ILB_EINVAL. Thread-safe. O(1). */
ILB_API int ilb_route_result_init(ilb_route_result *res);

/* ilb_router_pick - resolve the request's pool, admit it, and pick its
 * replica (see above). req may be NULL (then only a default route can
 * match). Every success must be followed by exactly one
 * ilb_router_complete() (or ilb_complete() on res->pool, but for a pair),
 * and one more for mirror_ticket when set.
 * Errors: ILB_EINVAL (as ilb_pick), ILB_ESIZE, ILB_ENOMODEL,
 * ILB_ERATELIMIT (retry_after_ns set), ILB_ETICKETS (also: the pair table
 * is full, ILB_OPT_ROUTER_PAIRS_MAX), and the pool's pick errors
 * (ILB_ENOREPLICA, ILB_ESATURATED, ILB_ESHED, ILB_ENOKEY). On error the
 * ticket is 0 and nothing is in flight.
 * Thread-safe, lock-free (see above). Cost: the routes tried, each
 * O(matches x attrs); O(key_len) for a split's cohort and the session;
 * per rate limit O(key); the pool's pick (two for a pair, one more for a
 * mirror); a sticky hit O(the pool's replicas) for the bound; a pair's
 * entry in the pair table O(1) while it has room to spare, up to
 * O(ILB_OPT_ROUTER_PAIRS_MAX) when it is nearly full. A sticky hit skips
 * the pool's policy, so a prefix pool does not record what a sticky
 * request adds to its prompt (the replica already holds it). */
ILB_API int ilb_router_pick(ilb_route_result *res, ilb_router *router,
                            const ilb_request *req);

/* ilb_router_complete - complete a router ticket (a pair's: both halves,
 * with this outcome). outcome may be NULL. Errors: as ilb_complete
 * (ILB_ESTALE for a ticket no pool of this router issued, or completed).
 * Thread-safe, lock-free. O(1). */
ILB_API int ilb_router_complete(ilb_router *router, uint64_t ticket,
                                const ilb_outcome *outcome);

/* ilb_router_complete_pair - complete a pair's ticket with an outcome per
 * half (NULL = OK, nothing measured), so a failing prefill replica is
 * charged for its own failures. Errors: as ilb_router_complete; ILB_EINVAL
 * for a ticket that is not a pair's (nothing changes). The ticket is
 * released when both halves are; ILB_EREMOVED when a half's replica was
 * removed (the other half is still recorded). */
ILB_API int ilb_router_complete_pair(ilb_router *router, uint64_t ticket,
                                     const ilb_outcome *prefill_outcome,
                                     const ilb_outcome *decode_outcome);

/* ilb_router_pin - pin the session key to replica_id of pool (model,
 * version) for ttl_ms (0 = ILB_OPT_ROUTER_STICKY_TTL_MS): its requests
 * routed to that pool go there while it can take them (the bound does not
 * apply to a pin; when it cannot, the session moves as any). replica_id
 * NULL unpins (forgets the session in that pool).
 * Errors: ILB_EINVAL (NULL router or key, key_len 0, sticky sessions off),
 * ILB_ENOMODEL (no such pool), ILB_ENOENT (no such replica), ILB_ERANGE
 * (ttl_ms over the TTL option's maximum). Writer. */
ILB_API int ilb_router_pin(ilb_router *router, const void *key,
                           size_t key_len, const char *model,
                           const char *version, const char *replica_id,
                           uint64_t ttl_ms);

/* ------------------------------------------------------------------------ */
/* Autoscaling signal (since 0.6)                                            */
/* ------------------------------------------------------------------------ */

/* What ilb_pool_autoscale recommends, and why. */
typedef struct ilb_autoscale {
  size_t struct_size;
  uint32_t current;         /* replicas in the pool */
  uint32_t ready;           /* of them, routable now */
  uint32_t desired;         /* raw recommendation now (before the
                               windows; within min..max) */
  uint32_t recommended;     /* after the stabilisation windows */
  uint64_t in_flight;       /* requests in flight in the pool */
  uint64_t waiting;         /* requests waiting on the replicas (fresh
                               telemetry), 0 when unknown */
  double arrival_per_s;     /* picks per second since the previous call
                               (0 at the first) */
  double service_per_s;     /* requests per second the ready replicas
                               can finish (0 = unknown: no latency yet) */
  double utilization;       /* arrival / service (0 when unknown) */
  int32_t overloaded;       /* 1: arrival > service -- no routing keeps
                               up; add replicas or shed */
  int32_t reserved0;
} ilb_autoscale;

/* ilb_pool_autoscale - one step of the pool's autoscaling signal, for a
 * host that drives an autoscaler (KEDA, the HPA through an external
 * metric, its own). Call it periodically (every 5 to 30 s).
 * desired = within [ILB_OPT_SCALE_MIN_REPLICAS, _MAX_REPLICAS], the
 * largest of ceil(in flight / ILB_OPT_SCALE_TARGET_IN_FLIGHT),
 * ceil(waiting / ILB_OPT_SCALE_TARGET_QUEUE) and ceil(arrival /
 * (service per ready replica * ILB_OPT_SCALE_TARGET_UTILIZATION%)).
 * The service rate of a replica is its concurrency (capacity, else
 * telemetry's max concurrency, else the in-flight target) over its
 * latency estimate (see ILB_POLICY_PEAK_EWMA; replicas without one are
 * counted at the others' mean).
 * recommended: above the previous recommendation, the lowest desired
 * value of the last ILB_OPT_SCALE_UP_WINDOW_MS; below it, the highest of
 * the last ILB_OPT_SCALE_DOWN_WINDOW_MS; else unchanged (the first call
 * starts at desired). The history holds 256 calls.
 * out->struct_size must be set; on success it is set to the bytes
 * written. Errors: ILB_EINVAL, ILB_ESIZE, ILB_EDEADLK, ILB_ENOMEM (the
 * first call allocates the history, about 3 KiB; nothing is recorded).
 * Writer (takes the pool mutex, reads the host clock). O(replicas). */
ILB_API int ilb_pool_autoscale(ilb_autoscale *out, ilb_pool *pool);

/* ------------------------------------------------------------------------ */
/* Stats export (since 0.6)                                                  */
/* ------------------------------------------------------------------------ */

/* ilb_stats_prometheus - the library's counters and gauges as Prometheus
 * text (exposition format 0.0.4) in buf: of the router's pools (router
 * not NULL; pool must then be NULL), or of one pool (pool not NULL,
 * router NULL). Series (labels: model, version -- "" for a lone pool --,
 * role "prefill" or "decode" for the pools of a pair, and replica):
 *   inferlb_picks_total{replica}, inferlb_in_flight{replica},
 *   inferlb_completions_total{replica}, inferlb_failures_total{replica},
 *   inferlb_ejections_total{replica}, inferlb_breaker_state{replica}
 *   (0 closed, 1 open, 2 half-open), inferlb_replica_excluded{replica},
 *   inferlb_shed_total, inferlb_retries_total,
 *   inferlb_prefix_lookup_blocks_total and
 *   inferlb_prefix_matched_blocks_total (prefix policy: their ratio is
 *   the predicted hit rate); and of a router:
 *   inferlb_route_picks_total{route, backend (its index), model,
 *   version}, inferlb_rate_limited_total
 *   {limit}, inferlb_rate_limit_evictions_total{limit},
 *   inferlb_no_model_total, inferlb_sticky_hits_total,
 *   inferlb_sticky_moves_total, inferlb_mirrored_total.
 * Label values are escaped as the format requires. On success the text
 * and a NUL fit, and *len_out (may be NULL) is its length without the
 * NUL. ILB_ENOSPC: buf_size was too small (buf may be NULL when 0);
 * *len_out is the size needed without the NUL (the text may grow
 * meanwhile: allocate some more). Errors: ILB_EINVAL (both or neither of
 * router and pool, buf NULL with buf_size > 0), ILB_ENOSPC. Takes the
 * router's mutex, then each pool's in turn: not from a pool's event
 * callback (a thread pinning a session at the same time would deadlock).
 * O(replicas + routes). */
ILB_API int ilb_stats_prometheus(char *buf, size_t buf_size, size_t *len_out,
                                 ilb_router *router, ilb_pool *pool);

/* ------------------------------------------------------------------------ */
/* Hashing                                                                   */
/* ------------------------------------------------------------------------ */

/* ilb_hash64 - XXH64 (Yann Collet's xxHash, 64-bit variant) of len bytes at
 * data with a seed: the hash the hashing policies apply to request keys
 * (seed 0). Same value on every platform. data may be NULL when len is 0.
 * Errors: ILB_EINVAL (hash_out NULL, data NULL with len > 0). Thread-safe.
 * O(len). */
ILB_API int ilb_hash64(uint64_t *hash_out, const void *data, size_t len,
                       uint64_t seed);

#ifdef __cplusplus
}
#endif

#endif /* INFERLB_INFERLB_H */
