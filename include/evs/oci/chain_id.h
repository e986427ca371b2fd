// Chain IDs: what containerd names the committed snapshot of a layer stack
// (image-spec config.md, "Layer ChainID"): ChainID(L0) = DiffID(L0) and
// ChainID(L0…Ln) = sha256(ChainID(L0…Ln-1) + " " + DiffID(Ln)).
#pragma once

#include <span>
#include <vector>

#include "evs/common/digest.h"

namespace evs::oci {

// The chain ID of each prefix of `diff_ids`: result[i] names layers 0…i.
// Empty input gives an empty result. One SHA-256 per layer.
std::vector<Digest> ChainIds(std::span<const Digest> diff_ids);

// The chain ID of the whole stack; empty Digest for an empty stack.
Digest ChainId(std::span<const Digest> diff_ids);

}  // namespace evs::oci
