/*
 * prefix.c - prefix-cache-aware routing: chat requests that share a long
 * system prompt, and conversations that come back for their next turn,
 * go where their KV cache already is -- until that replica is busy.
 *
 * The gateway passes each request's prompt text (here a made-up chat
 * transcript); the library cuts it into 256-byte blocks, hashes them as a
 * chain and remembers which replica it sent them to. A second part feeds
 * the index from a server's KV-cache events instead (as a host subscribed
 * to vLLM's event stream would) and shows a stale event refused. Exits 1
 * if routing does not behave as described.
 *
 *   cc prefix.c $(pkg-config --cflags --libs inferlb) -o prefix
 *
 * SPDX-License-Identifier: MIT
 */
#include <inferlb/inferlb.h>

#include <stdio.h>
#include <string.h>

#define REPLICAS 4
#define CONVERSATIONS 6

static const char *const ids[REPLICAS] = {"gpu-0", "gpu-1", "gpu-2", "gpu-3"};

static int fail(const char *what, int rc) {
  fprintf(stderr, "inferlb: %s: %s (%s)\n", what, ilb_strerror(rc),
          ilb_err_name(rc));
  return 1;
}

/* The prompt of turn `turn` of conversation c: a shared system prompt,
 * then the conversation's own history, one exchange per turn. */
static size_t prompt_of(char *buf, size_t cap, int c, int turn) {
  size_t n = 0;
  for (int k = 0; k < 8; k++) /* about 1 KiB of system prompt */
    n += (size_t)snprintf(buf + n, cap - n,
                          "[system] You are a helpful assistant. Rule %d: "
                          "answer briefly, cite sources, never guess. "
                          "Follow the house style for code and prose. ",
                          k);
  for (int t = 0; t <= turn; t++)
    n += (size_t)snprintf(buf + n, cap - n,
                          "[user %d] Question %d of conversation %d about "
                          "topic %d, with enough detail to fill a block or "
                          "two of text, so that each turn adds blocks of its "
                          "own to the history. [assistant] Answer %d. ",
                          c, t, c, c * 7 + t, t);
  return n;
}

static int pick_prompt(ilb_pool *pool, const char *text, size_t len,
                       int *replica) {
  ilb_request req;
  ilb_request_init(&req);
  req.prompt = text;
  req.prompt_len = len;
  req.prompt_tokens = (uint32_t)(len / 4);
  req.output_tokens = 200;
  ilb_pick_result pick;
  ilb_pick_result_init(&pick);
  int rc = ilb_pick(&pick, pool, &req);
  if (rc < 0)
    return rc;
  *replica = (int)(uintptr_t)pick.host_data - 1;
  return ilb_complete(pool, pick.ticket, NULL); /* the request finished */
}

int main(void) {
  ilb_pool *pool = NULL;
  int rc = ilb_pool_new(&pool, NULL);
  if (rc < 0)
    return fail("ilb_pool_new", rc);
  rc = ilb_pool_set_option(pool, ILB_OPT_POLICY, ILB_POLICY_PREFIX);
  if (rc < 0)
    return fail("ILB_OPT_POLICY", rc);
  for (int i = 0; i < REPLICAS; i++) {
    ilb_replica_spec spec;
    ilb_replica_spec_init(&spec);
    spec.id = ids[i];
    spec.host_data = (void *)(uintptr_t)(i + 1);
    if ((rc = ilb_replica_add(pool, &spec)) < 0)
      return fail("ilb_replica_add", rc);
  }

  /* Part 1: learnt from routing. Each conversation's turns stay on the
   * replica that has its history cached. */
  static char text[16384];
  int home[CONVERSATIONS], moved = 0;
  for (int turn = 0; turn < 4; turn++)
    for (int c = 0; c < CONVERSATIONS; c++) {
      size_t len = prompt_of(text, sizeof text, c, turn);
      int r;
      if ((rc = pick_prompt(pool, text, len, &r)) < 0)
        return fail("ilb_pick", rc);
      if (turn == 0)
        home[c] = r;
      else if (r != home[c])
        moved++;
      if (c == 0)
        printf("conversation 0, turn %d (%zu bytes): %s\n", turn, len,
               ids[r]);
    }
  ilb_prefix_stats st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  if ((rc = ilb_pool_prefix_stats(&st, pool)) < 0)
    return fail("ilb_pool_prefix_stats", rc);
  printf("%d conversations x 4 turns: %d turns moved; predicted cache hit "
         "rate %.2f (%llu of %llu blocks), index %llu entries, %llu bytes\n",
         CONVERSATIONS, moved,
         (double)st.matched_blocks / (double)st.blocks,
         (unsigned long long)st.matched_blocks,
         (unsigned long long)st.blocks, (unsigned long long)st.entries,
         (unsigned long long)st.memory_bytes);
  if (moved || st.matched_blocks * 2 < st.blocks)
    return 1;

  /* Part 2: learnt from a server's KV events. gpu-3 reports it stored the
   * blocks of a document the host hashed itself (block hashes computed the
   * server's way); a request for it goes there. */
  rc = ilb_pool_set_option(pool, ILB_OPT_PREFIX_MODE, ILB_PREFIX_EVENTS);
  if (rc < 0)
    return fail("ILB_OPT_PREFIX_MODE", rc);
  uint64_t doc[16];
  for (int i = 0; i < 16; i++)
    doc[i] = 0xd0c0000000000000u + (uint64_t)i;
  ilb_kv_event ev;
  ilb_kv_event_init(&ev);
  ev.type = ILB_KV_STORED;
  ev.seq = 41;
  ev.block_hashes = doc;
  ev.n_blocks = 16;
  if ((rc = ilb_replica_kv_event(pool, "gpu-3", &ev)) < 0)
    return fail("ilb_replica_kv_event", rc);
  ev.seq = 40; /* an older batch arriving late */
  ev.type = ILB_KV_CLEARED;
  rc = ilb_replica_kv_event(pool, "gpu-3", &ev);
  printf("stale event (seq 40 after 41): %s\n", ilb_err_name(rc));
  if (rc != ILB_ESTALE)
    return 1;
  ilb_request req;
  ilb_request_init(&req);
  req.block_hashes = doc;
  req.n_blocks = 16;
  req.prompt_tokens = 16 * 64;
  ilb_pick_result pick;
  ilb_pick_result_init(&pick);
  if ((rc = ilb_pick(&pick, pool, &req)) < 0)
    return fail("ilb_pick", rc);
  printf("a request for the document goes to %s\n", pick.replica_id);
  int ok = strcmp(pick.replica_id, "gpu-3") == 0;
  ilb_complete(pool, pick.ticket, NULL);
  ilb_pool_free(pool);
  return ok ? 0 : 1;
}
