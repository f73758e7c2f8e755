/* A temporary directory per test program (created by the group setup,
 * emptied and removed by the group teardown) and paths in it. Define
 * TMPDIR_PREFIX (e.g. "test_sim_svg") before including; include after
 * cmocka.h.
 * SPDX-License-Identifier: MIT */
#ifndef INFERLB_TESTS_TMPDIR_H
#define INFERLB_TESTS_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char tmpdir[512];
#define TMPDIR_MAX_FILES 32
static char tmpfiles[TMPDIR_MAX_FILES][600];
static size_t n_tmpfiles;

static int group_setup(void **state) {
  (void)state;
  const char *base = getenv("TMPDIR");
  if (base == NULL || base[0] == '\0')
    base = "/tmp";
  snprintf(tmpdir, sizeof tmpdir, "%s/%s.XXXXXX", base, TMPDIR_PREFIX);
  return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int group_teardown(void **state) {
  (void)state;
  for (size_t i = 0; i < n_tmpfiles; i++)
    remove(tmpfiles[i]);
  n_tmpfiles = 0;
  return rmdir(tmpdir);
}

/* A path in the temp directory, removed by the teardown. */
static const char *tmp_path(const char *name) {
  assert_true(n_tmpfiles < TMPDIR_MAX_FILES);
  char *path = tmpfiles[n_tmpfiles++];
  snprintf(path, sizeof tmpfiles[0], "%s/%s", tmpdir, name);
  return path;
}

#endif
