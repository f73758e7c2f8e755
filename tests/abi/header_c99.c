/* The public header must compile as strict C99: -std=c99 -pedantic -Werror
 * -Wall -Wextra (see check-header.sh). It must stand alone: nothing is
 * included before it. */
#include <inferlb/inferlb.h>

/* Use the declarations so an error in any of them is seen, without linking. */
int header_c99_check(void);
int header_c99_check(void) {
  ilb_host host;
  ilb_replica_spec spec;
  ilb_request req;
  ilb_pick_result res;
  ilb_outcome out;
  ilb_replica_info info;
  ilb_event ev;
  ilb_label label = {"model", "llama-3-8b"};
  int (*pick)(ilb_pick_result *, ilb_pool *, const ilb_request *) = ilb_pick;
  (void)host; (void)spec; (void)req; (void)res; (void)out; (void)info;
  (void)ev; (void)label; (void)pick;
  return ILB_VERSION_NUM + ILB_EINVAL + ILB_POLICY_P2C + ILB_OPT_POLICY;
}
