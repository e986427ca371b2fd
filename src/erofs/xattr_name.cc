#include "xattr_name.h"

#include "evs/erofs/format.h"

namespace evs::erofs {

std::optional<std::pair<uint8_t, std::string_view>> SplitXattrName(std::string_view name) {
  if (name == "system.posix_acl_access")
    return std::make_pair(kXattrIndexPosixAclAccess, name.substr(name.size()));
  if (name == "system.posix_acl_default")
    return std::make_pair(kXattrIndexPosixAclDefault, name.substr(name.size()));
  for (uint8_t index : {kXattrIndexUser, kXattrIndexTrusted, kXattrIndexSecurity}) {
    std::string_view prefix = *XattrPrefixOf(index);
    if (name.size() > prefix.size() && name.substr(0, prefix.size()) == prefix)
      return std::make_pair(index, name.substr(prefix.size()));
  }
  return std::nullopt;
}

std::optional<std::string_view> XattrPrefixOf(uint8_t index) {
  switch (index) {
    case kXattrIndexUser:
      return "user.";
    case kXattrIndexPosixAclAccess:
      return "system.posix_acl_access";
    case kXattrIndexPosixAclDefault:
      return "system.posix_acl_default";
    case kXattrIndexTrusted:
      return "trusted.";
    case kXattrIndexSecurity:
      return "security.";
    default:
      return std::nullopt;
  }
}

}  // namespace evs::erofs
