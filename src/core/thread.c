/* Per-thread identity and the asymmetric fence behind the pick fast path.
 *
 * Each thread that picks gets a small thread number, the lowest free one;
 * numbers are recycled when threads exit (a pthread key destructor), so
 * they stay small in hosts that churn threads. Threads 1..ILB__STRIPES
 * each own one stripe of every pool exclusively -- its random stream,
 * round-robin cursor and a private block of ticket entries that only it
 * claims, with a plain store instead of a compare-and-swap.
 *
 * A plain store does not order itself before the pick's later load of the
 * snapshot pointer; writers restore that order with membarrier(2)
 * (MEMBARRIER_CMD_PRIVATE_EXPEDITED): every running thread of the process
 * executes a full barrier before the writer scans the ticket table. Where
 * membarrier is unavailable (or under ThreadSanitizer, which cannot see
 * it), picks use a seq_cst fence instead.
 * SPDX-License-Identifier: MIT */
#if defined(__linux__)
#define _GNU_SOURCE 1
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <stdlib.h>

#include "core/internal.h"

#if defined(__SANITIZE_THREAD__)
#define ILB__NO_MEMBARRIER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ILB__NO_MEMBARRIER 1
#endif
#endif

#define TIDS_MAX 4096

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t key;
static int key_ok;
static pthread_mutex_t tid_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t tid_used[TIDS_MAX / 64];
_Atomic int ilb__mb_state; /* ILB__MB_*: moves only OFF or ON, ON -> FAILED */

#if defined(__GNUC__)
__attribute__((tls_model("initial-exec")))
#endif
_Thread_local uint32_t ilb__tl_tid;

static void tid_release(void *v) {
  uint32_t t = (uint32_t)(uintptr_t)v - 1;
  pthread_mutex_lock(&tid_mu);
  tid_used[t / 64] &= ~(UINT64_C(1) << (t % 64));
  pthread_mutex_unlock(&tid_mu);
  ilb__tl_tid = 0;
}

static int membarrier_register(void) {
#if defined(__linux__) && defined(SYS_membarrier) &&                         \
    !defined(ILB__NO_MEMBARRIER)
  long mask = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0);
  if (mask < 0 || !(mask & MEMBARRIER_CMD_PRIVATE_EXPEDITED))
    return 0;
  return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                 0) == 0;
#else
  return 0;
#endif
}

/* INFERLB_NO_MEMBARRIER=1 in the environment forces the fence path (for
 * tests of that path, and for hosts whose sandbox forbids the syscall). */
static void init_once(void) {
  key_ok = pthread_key_create(&key, tid_release) == 0;
  const char *off = getenv("INFERLB_NO_MEMBARRIER");
  atomic_store(&ilb__mb_state,
               off && *off && strcmp(off, "0") != 0 ? ILB__MB_OFF
               : membarrier_register()              ? ILB__MB_ON
                                                    : ILB__MB_OFF);
}

void ilb__thread_init(void) { pthread_once(&once, init_once); }

uint32_t ilb__thread_register(void) {
  pthread_once(&once, init_once);
  uint32_t t = TIDS_MAX;
  pthread_mutex_lock(&tid_mu);
  for (uint32_t w = 0; w < TIDS_MAX / 64; w++) {
    if (tid_used[w] == UINT64_MAX)
      continue;
    uint32_t b = 0;
    while (tid_used[w] & (UINT64_C(1) << b))
      b++;
    tid_used[w] |= UINT64_C(1) << b;
    t = w * 64 + b;
    break;
  }
  pthread_mutex_unlock(&tid_mu);
  if (t == TIDS_MAX) /* all taken: share stripes, never own one */
    return ilb__tl_tid = TIDS_MAX + 1;
  if (!key_ok || pthread_setspecific(key, (void *)(uintptr_t)(t + 1)) != 0) {
    /* No destructor could give the number back: do not take it, and do
     * not claim exclusivity. */
    pthread_mutex_lock(&tid_mu);
    tid_used[t / 64] &= ~(UINT64_C(1) << (t % 64));
    pthread_mutex_unlock(&tid_mu);
    return ilb__tl_tid = TIDS_MAX + 1;
  }
  return ilb__tl_tid = t + 1;
}

/* If membarrier ever fails after registration (a seccomp filter installed
 * later, say), picks are switched to fencing themselves; but a pick that has
 * not seen the switch yet may still be unordered, and there is no telling
 * when all have, so from then on writers never free an old snapshot early:
 * it is kept until the pool is freed (returns -1, sticky). */
int ilb__writer_barrier(void) {
  /* One state word, so no writer can see "fences" without also seeing
   * that some picks may have skipped theirs. */
  int st = atomic_load(&ilb__mb_state);
  if (st == ILB__MB_OFF)
    return 0; /* picks always fence */
  if (st == ILB__MB_FAILED)
    return -1;
#if defined(__linux__) && defined(SYS_membarrier)
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0)
    return 0;
#endif
  atomic_store(&ilb__mb_state, ILB__MB_FAILED);
  return -1;
}
