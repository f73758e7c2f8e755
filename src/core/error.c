/* Error table, version. SPDX-License-Identifier: MIT */
#include "core/internal.h"

#define ILB__STR2(x) #x
#define ILB__STR(x) ILB__STR2(x)

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
