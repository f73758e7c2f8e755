/* Thread numbers and per-thread private ticket entries (src/core/thread.c),
 * observed through the public API: how many requests each thread can hold,
 * many threads at once, and numbers recycled when threads exit.
 * SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include <inferlb/inferlb.h>

#define SHARED 64 /* ILB_OPT_MAX_IN_FLIGHT used below (its minimum) */

static ilb_pool *new_pool(void) {
  ilb_pool *pool = NULL;
  assert_int_equal(ilb_pool_new(&pool, NULL), ILB_OK);
  assert_int_equal(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, SHARED),
                   ILB_OK);
  ilb_replica_spec spec;
  assert_int_equal(ilb_replica_spec_init(&spec), ILB_OK);
  spec.id = "a";
  assert_int_equal(ilb_replica_add(pool, &spec), ILB_OK);
  spec.id = "b";
  assert_int_equal(ilb_replica_add(pool, &spec), ILB_OK);
  return pool;
}

static int64_t total_in_flight(ilb_pool *pool) {
  int64_t n = 0;
  const char *ids[] = {"a", "b"};
  for (int i = 0; i < 2; i++) {
    ilb_replica_info info;
    info.struct_size = sizeof info;
    assert_int_equal(ilb_replica_get(&info, pool, ids[i]), ILB_OK);
    n += info.in_flight;
  }
  return n;
}

/* Pick until refused; returns how many picks succeeded (tickets stored). */
static int hold_all(ilb_pool *pool, uint64_t *t, int max) {
  for (int n = 0; n < max; n++) {
    ilb_pick_result res;
    ilb_pick_result_init(&res);
    int rc = ilb_pick(&res, pool, NULL);
    if (rc == ILB_ETICKETS)
      return n;
    if (rc != ILB_OK)
      return -1;
    t[n] = res.ticket;
  }
  return max;
}

struct holder {
  ilb_pool *pool;
  uint64_t t[SHARED + ILB_THREAD_TICKETS + 8];
  int held;
};

static void *hold_thread(void *arg) {
  struct holder *h = arg;
  h->held = hold_all(h->pool, h->t, (int)(sizeof h->t / sizeof h->t[0]));
  return NULL;
}

/* The main thread fills its private entries and the whole shared table; a
 * second thread still has exactly its own private entries; completions
 * from any thread free entries of either kind. */
static void private_entries_per_thread(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  uint64_t mine[SHARED + ILB_THREAD_TICKETS + 8];
  int n = hold_all(pool, mine, (int)(sizeof mine / sizeof mine[0]));
  assert_int_equal(n, SHARED + ILB_THREAD_TICKETS);

  struct holder h = {.pool = pool};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, hold_thread, &h), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(h.held, ILB_THREAD_TICKETS);
  assert_int_equal(total_in_flight(pool), SHARED + 2 * ILB_THREAD_TICKETS);

  /* The exited thread's tickets complete from here, exactly once. */
  for (int i = 0; i < h.held; i++) {
    assert_int_equal(ilb_complete(pool, h.t[i], NULL), ILB_OK);
    assert_int_equal(ilb_complete(pool, h.t[i], NULL), ILB_ESTALE);
  }
  for (int i = 0; i < n; i++)
    assert_int_equal(ilb_complete(pool, mine[i], NULL), ILB_OK);
  assert_int_equal(total_in_flight(pool), 0);
  ilb_pool_free(pool);
}

/* Thread numbers are recycled: 150 threads one after another each find
 * private entries of their own (without recycling, threads numbered above
 * 64 would have none and could hold only the shared table). */
static void numbers_recycled(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  for (int k = 0; k < 150; k++) {
    struct holder h = {.pool = pool};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, hold_thread, &h), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(h.held, SHARED + ILB_THREAD_TICKETS);
    for (int i = 0; i < h.held; i++)
      assert_int_equal(ilb_complete(pool, h.t[i], NULL), ILB_OK);
  }
  assert_int_equal(total_in_flight(pool), 0);
  ilb_pool_free(pool);
}

enum { CROWD = 80 }; /* more threads than owned stripes (64) */

struct crowd {
  ilb_pool *pool;
  pthread_barrier_t *go;
  uint64_t ticket;
  int rc;
};

static void *crowd_thread(void *arg) {
  struct crowd *c = arg;
  pthread_barrier_wait(c->go);
  ilb_pick_result res;
  ilb_pick_result_init(&res);
  c->rc = ilb_pick(&res, c->pool, NULL);
  c->ticket = res.ticket;
  pthread_barrier_wait(c->go); /* hold until everyone has picked */
  return NULL;
}

/* 80 threads alive at once: the first 64 by number claim private entries,
 * the rest share the table with compare-and-swap; every pick succeeds and
 * every ticket is distinct and completes once. */
static void more_threads_than_stripes(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  assert_int_equal(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 128),
                   ILB_OK);
  pthread_barrier_t go;
  assert_int_equal(pthread_barrier_init(&go, NULL, CROWD + 1), 0);
  static struct crowd c[CROWD];
  pthread_t th[CROWD];
  for (int i = 0; i < CROWD; i++) {
    c[i] = (struct crowd){.pool = pool, .go = &go};
    assert_int_equal(pthread_create(&th[i], NULL, crowd_thread, &c[i]), 0);
  }
  pthread_barrier_wait(&go);
  pthread_barrier_wait(&go);
  for (int i = 0; i < CROWD; i++)
    assert_int_equal(pthread_join(th[i], NULL), 0);
  pthread_barrier_destroy(&go);
  assert_int_equal(total_in_flight(pool), CROWD);
  for (int i = 0; i < CROWD; i++) {
    assert_int_equal(c[i].rc, ILB_OK);
    for (int j = 0; j < i; j++)
      assert_true(c[i].ticket != c[j].ticket);
  }
  for (int i = 0; i < CROWD; i++)
    assert_int_equal(ilb_complete(pool, c[i].ticket, NULL), ILB_OK);
  assert_int_equal(total_in_flight(pool), 0);
  ilb_pool_free(pool);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(private_entries_per_thread),
      cmocka_unit_test(numbers_recycled),
      cmocka_unit_test(more_threads_than_stripes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
