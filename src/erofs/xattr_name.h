// Xattr names as EROFS stores them: a short-prefix index and the rest of the
// name (reference/erofs-and-dm-verity-format.md §1.5; kernel fs/erofs/xattr.c).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

namespace evs::erofs {

// Splits "user.foo" into (kXattrIndexUser, "foo"). The two POSIX ACL names
// must match exactly and have an empty suffix. nullopt for names outside the
// namespaces EROFS indexes without long prefixes (user., trusted., security.,
// system.posix_acl_access, system.posix_acl_default).
std::optional<std::pair<uint8_t, std::string_view>> SplitXattrName(std::string_view name);

// The prefix of a name index ("user."), or nullopt for an index the kernel
// does not name (0, lustre, ≥ 7, long prefixes).
std::optional<std::string_view> XattrPrefixOf(uint8_t index);

}  // namespace evs::erofs
