// The public header must compile as C++11: -std=c++11 -pedantic -Werror
// -Wall -Wextra (see check-header.sh), with C linkage for every function.
#include <inferlb/inferlb.h>

static_assert(sizeof(ilb_host) > sizeof(size_t), "ilb_host is a struct");
static_assert(ILB_OK == 0 && ILB_EINVAL < 0, "errors are negative");

int header_cxx11_check();
int header_cxx11_check() {
  ilb_pool *pool = nullptr;
  ilb_pick_result res;
  ilb_outcome out;
  ilb_label label = {"model", "llama-3-8b"};
  int (*pick)(ilb_pick_result *, ilb_pool *, const ilb_request *) = ilb_pick;
  void (*pool_free)(ilb_pool *) = ilb_pool_free;
  (void)pool; (void)res; (void)out; (void)label; (void)pick; (void)pool_free;
  return ILB_VERSION_NUM + ILB_POLICY_P2C;
}
