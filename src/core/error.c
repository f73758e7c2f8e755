/* Error table, version. SPDX-License-Identifier: MIT */
#include "core/internal.h"

#define ILB__STR2(x) #x
#define ILB__STR(x) ILB__STR2(x)

/* ILB_ERRNO_MIN must name the lowest code in the table. */
#define ILB__ERR_CHECK(name, val, text)                                      \
  _Static_assert((val) >= ILB_ERRNO_MIN, "ILB_ERRNO_MIN too high: " #name);
ILB_ERRNO_MAP(ILB__ERR_CHECK)
#undef ILB__ERR_CHECK
_Static_assert(ILB_ERRNO_MIN == ILB_ENOSPC, "ILB_ERRNO_MIN: the last code");

uint32_t ilb_version(void) { return ILB_VERSION_NUM; }

const char *ilb_version_string(void) {
  return ILB__STR(ILB_VERSION_MAJOR) "." ILB__STR(
      ILB_VERSION_MINOR) "." ILB__STR(ILB_VERSION_PATCH);
}

const char *ilb_strerror(int err) {
  switch (err) {
  case ILB_OK:
    return "success";
#define ILB__ERR_TEXT(name, val, text)                                        \
  case (val):                                                                 \
    return text;
    ILB_ERRNO_MAP(ILB__ERR_TEXT)
#undef ILB__ERR_TEXT
  default:
    return "unknown error";
  }
}

const char *ilb_err_name(int err) {
  switch (err) {
  case ILB_OK:
    return "OK";
#define ILB__ERR_NAME(name, val, text)                                        \
  case (val):                                                                 \
    return #name;
    ILB_ERRNO_MAP(ILB__ERR_NAME)
#undef ILB__ERR_NAME
  default:
    return "EUNKNOWNCODE";
  }
}
