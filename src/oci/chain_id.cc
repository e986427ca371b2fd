#include "evs/oci/chain_id.h"

namespace evs::oci {

std::vector<Digest> ChainIds(std::span<const Digest> diff_ids) {
  std::vector<Digest> out;
  out.reserve(diff_ids.size());
  for (const Digest& diff_id : diff_ids) {
    if (out.empty()) {
      out.push_back(diff_id);
    } else {
      // image-spec config.md: ChainID(L₀|…|Lₙ) = Digest(ChainID(L₀|…|Lₙ₋₁) + " " + DiffID(Lₙ)).
      out.push_back(Digest::Sha256Of(out.back().ToString() + " " + diff_id.ToString()));
    }
  }
  return out;
}

Digest ChainId(std::span<const Digest> diff_ids) {
  std::vector<Digest> all = ChainIds(diff_ids);
  return all.empty() ? Digest() : all.back();
}

}  // namespace evs::oci
