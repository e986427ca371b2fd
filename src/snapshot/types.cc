#include "evs/snapshot/types.h"

namespace evs::snapshot {

std::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kView:
      return "view";
    case Kind::kActive:
      return "active";
    case Kind::kCommitted:
      return "committed";
    default:
      return "unknown";
  }
}

Status ValidateLabels(const Labels& labels) {
  for (const auto& [key, value] : labels) {
    if (key.size() + value.size() > kMaxLabelSize) {
      std::string shown = key.substr(0, 64);
      return InvalidArgumentError("label key and value greater than maximum size (", kMaxLabelSize,
                                  " bytes), key: ", shown, key.size() > 64 ? "…" : "", " (",
                                  key.size() + value.size(), " bytes)");
    }
  }
  return OkStatus();
}

}  // namespace evs::snapshot
