// Base64 (RFC 4648 §4, with padding): HTTP Basic credentials, docker's
// config.json "auth" fields, JWT parts in tests.
#pragma once

#include <string>
#include <string_view>

#include "evs/common/status.h"

namespace evs {

// Standard alphabet, padded. O(n).
std::string Base64Encode(std::string_view bytes);

// Decodes standard or URL-safe base64; padding optional, ASCII whitespace
// ignored. InvalidArgument (without echoing the input, which may be a
// secret) on any other character or a bad length.
Result<std::string> Base64Decode(std::string_view text);

}  // namespace evs
