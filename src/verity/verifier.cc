#include "evs/verity/verifier.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <vector>

#include "block_hasher.h"
#include "evs/verity/tree_builder.h"
#include "worker_pool.h"

namespace evs::verity {
namespace {

using HashBlock = std::shared_ptr<const std::vector<uint8_t>>;

}  // namespace

struct VerityTree::State {
  LayerBlockSource* source = nullptr;
  VerityParams params;
  TreeLayout layout;
  std::string root;  // raw digest bytes
  std::string name;
  VerityTreeOptions options;

  // Hashers lent to callers, one per concurrent verification.
  std::mutex hashers_mu;
  std::vector<std::unique_ptr<BlockHasher>> free_hashers;

  // Verified hash blocks, indexed by file hash block − hash_start_block.
  std::mutex cache_mu;
  std::vector<HashBlock> cache;
  // Slots being read and verified by one thread; others wanting the same
  // block wait for it (cache_cv) instead of reading it too.
  std::vector<uint8_t> loading;
  std::condition_variable cache_cv;
  uint64_t level0_cached = 0;
  uint64_t level0_limit = 0;  // level-0 blocks kept at most
  uint64_t clock_hand = 0;

  std::atomic<uint64_t> hash_blocks_read{0};
  std::atomic<uint64_t> data_blocks_verified{0};
  std::atomic<uint64_t> failures{0};

  // RAII loan of a hasher.
  class Loan {
   public:
    explicit Loan(State* s) : s_(s) {
      std::lock_guard<std::mutex> lock(s_->hashers_mu);
      if (!s_->free_hashers.empty()) {
        h_ = std::move(s_->free_hashers.back());
        s_->free_hashers.pop_back();
      }
      if (!h_) {
        h_ = std::make_unique<BlockHasher>(s_->params.algorithm, s_->params.hash_type,
                                           s_->params.salt);
      }
    }
    ~Loan() {
      std::lock_guard<std::mutex> lock(s_->hashers_mu);
      s_->free_hashers.push_back(std::move(h_));
    }
    BlockHasher* operator->() { return h_.get(); }

   private:
    State* s_;
    std::unique_ptr<BlockHasher> h_;
  };

  Status Fail(Status status) {
    failures.fetch_add(1, std::memory_order_relaxed);
    return status;
  }

  // The verified contents of hash block `index` of `level`, reading and
  // verifying it (and, first, its parents) if it is not cached.
  Result<HashBlock> GetHashBlock(uint32_t level, uint64_t index) {
    const uint64_t file_block = layout.level_start[level] + index;
    const uint64_t slot = file_block - layout.hash_start_block;
    {
      std::unique_lock<std::mutex> lock(cache_mu);
      for (;;) {
        if (cache[slot]) return cache[slot];
        if (!loading[slot]) break;
        cache_cv.wait(lock);  // another thread is reading it
      }
      loading[slot] = 1;
    }
    // Whatever happens below, the slot is free again for the next reader
    // (which retries if this one failed).
    struct Loading {
      State* s;
      uint64_t slot;
      ~Loading() {
        {
          std::lock_guard<std::mutex> lock(s->cache_mu);
          s->loading[slot] = 0;
        }
        s->cache_cv.notify_all();
      }
    } loading_guard{this, slot};
    const uint32_t hbs = layout.hash_block_size;
    const uint64_t offset = file_block * hbs;
    auto block = std::make_shared<std::vector<uint8_t>>(hbs);
    Status read = source->ReadAt(offset, block->data(), hbs);
    if (!read.ok()) {
      return read.Annotate(StrCat(name, ": hash block ", file_block, " (level ", level, ")"));
    }
    hash_blocks_read.fetch_add(1, std::memory_order_relaxed);
    uint8_t digest[64];
    {
      Loan h(this);
      h->Hash(block->data(), hbs, digest);
    }
    const size_t d = layout.digest_size;
    if (level + 1 == layout.levels()) {
      if (std::memcmp(digest, root.data(), d) != 0) {
        return Fail(DataLossError(name, ": hash block ", file_block, " (top level ", level,
                                  ", offset ", offset,
                                  ") does not match the root digest (or the superblock's salt "
                                  "was changed)"));
      }
    } else {
      const uint64_t parent_index = index >> layout.fanout_bits;
      EVS_ASSIGN_OR_RETURN(HashBlock parent, GetHashBlock(level + 1, parent_index));
      const uint64_t entry = index & (layout.fanout() - 1);
      if (std::memcmp(digest, parent->data() + entry * layout.digest_slot, d) != 0) {
        return Fail(DataLossError(name, ": hash block ", file_block, " (level ", level, ", offset ",
                                  offset, ") does not match entry ", entry, " of hash block ",
                                  layout.level_start[level + 1] + parent_index, " (level ",
                                  level + 1, ")"));
      }
    }
    HashBlock verified = std::move(block);
    std::lock_guard<std::mutex> lock(cache_mu);
    if (cache[slot]) return cache[slot];
    if (level == 0) {
      // Keep level 0 within the budget by dropping another level-0 block.
      if (level0_cached >= level0_limit) {
        const uint64_t first = layout.level_start[0] - layout.hash_start_block;
        const uint64_t n = layout.level_blocks[0];
        for (uint64_t tries = 0; tries < n && level0_cached >= level0_limit; ++tries) {
          uint64_t victim = first + clock_hand;
          clock_hand = (clock_hand + 1) % n;
          if (cache[victim] && victim != slot) {
            cache[victim].reset();
            --level0_cached;
          }
        }
      }
      ++level0_cached;
    }
    cache[slot] = verified;
    return verified;
  }
};

VerityTree::VerityTree() : state_(std::make_unique<State>()) {}
VerityTree::~VerityTree() = default;

Result<std::unique_ptr<VerityTree>> VerityTree::Open(LayerBlockSource* source, uint64_t hash_offset,
                                                     const Digest& root_digest,
                                                     VerityTreeOptions options) {
  std::string name = options.layer_name.empty() ? source->name() : options.layer_name;
  if (root_digest.empty()) return InvalidArgumentError(name, ": empty verity root digest");
  if (hash_offset > source->size() || source->size() - hash_offset < kSuperblockSize) {
    return DataLossError(name, ": no room for a verity superblock at offset ", hash_offset, " of ",
                         source->size(), " bytes");
  }
  char sb[kSuperblockSize];
  Status read = source->ReadAt(hash_offset, sb, sizeof sb);
  if (!read.ok()) return read.Annotate(StrCat(name, ": verity superblock"));
  EVS_ASSIGN_OR_RETURN(VerityParams params,
                       DecodeSuperblock(std::string_view(sb, sizeof sb),
                                        StrCat(name, ": superblock at offset ", hash_offset)));
  if (params.hash_offset() != hash_offset) {
    return DataLossError(name, ": superblock at offset ", hash_offset, " describes ",
                         params.data_blocks, " data blocks of ", params.data_block_size,
                         " bytes, which end at ", params.hash_offset());
  }
  if (params.algorithm != root_digest.algorithm()) {
    return DataLossError(name, ": superblock says ", HashAlgorithmName(params.algorithm),
                         " but the root digest is ", HashAlgorithmName(root_digest.algorithm()));
  }
  EVS_ASSIGN_OR_RETURN(TreeLayout layout, TreeLayout::Compute(params, hash_offset));
  if (source->size() < layout.end_offset) {
    return DataLossError(name, ": verity tree needs ", layout.end_offset, " bytes, file has ",
                         source->size());
  }
  std::unique_ptr<VerityTree> tree(new VerityTree());
  State& s = *tree->state_;
  s.source = source;
  s.params = std::move(params);
  s.layout = std::move(layout);
  s.root = root_digest.raw();
  s.name = std::move(name);
  s.options = options;
  s.cache.resize(s.layout.hash_blocks);
  s.loading.assign(s.layout.hash_blocks, 0);
  s.level0_limit = std::max<uint64_t>(1, options.cache_bytes / s.layout.hash_block_size);
  return tree;
}

const VerityParams& VerityTree::params() const { return state_->params; }
const TreeLayout& VerityTree::layout() const { return state_->layout; }
const std::string& VerityTree::layer_name() const { return state_->name; }

VerityTree::Stats VerityTree::stats() const {
  Stats st;
  st.hash_blocks_read = state_->hash_blocks_read.load();
  st.data_blocks_verified = state_->data_blocks_verified.load();
  st.failures = state_->failures.load();
  return st;
}

Status VerityTree::VerifyDataBlocks(uint64_t first, const uint8_t* data, size_t count) {
  State& s = *state_;
  const TreeLayout& t = s.layout;
  if (first > t.data_blocks || count > t.data_blocks - first) {
    return Status(Code::kOutOfRange, StrCat(s.name, ": data blocks ", first, "..", first + count,
                                            " past the image's ", t.data_blocks));
  }
  const size_t bs = s.params.data_block_size;
  const size_t d = t.digest_size;
  // Digests of up to this many blocks at once, so that the hasher can work
  // on two blocks at a time (salted_sha256.h).
  constexpr size_t kBatch = 128;
  uint8_t digests[kBatch * 64];
  HashBlock level0;
  uint64_t level0_index = UINT64_MAX;
  for (size_t done = 0; done < count; done += kBatch) {
    const size_t n = std::min(kBatch, count - done);
    {
      State::Loan h(&s);
      h->HashBlocks(data + done * bs, bs, n, digests, d);
    }
    for (size_t i = 0; i < n; ++i) {
      const uint64_t block = first + done + i;
      const uint8_t* expected;
      if (t.levels() == 0) {
        expected = reinterpret_cast<const uint8_t*>(s.root.data());
      } else {
        uint64_t index = block >> t.fanout_bits;
        if (index != level0_index) {
          EVS_ASSIGN_OR_RETURN(level0, s.GetHashBlock(0, index));
          level0_index = index;
        }
        expected = level0->data() + (block & (t.fanout() - 1)) * t.digest_slot;
      }
      if (std::memcmp(digests + i * d, expected, d) != 0) {
        return s.Fail(DataLossError(
            s.name, ": data block ", block, " (offset ", block * bs, ") does not match its hash",
            t.levels() == 0 ? std::string(" (the root digest)")
                            : StrCat(" in hash block ", t.level_start[0] + level0_index)));
      }
    }
  }
  s.data_blocks_verified.fetch_add(count, std::memory_order_relaxed);
  return OkStatus();
}

Status VerityTree::VerifyHashTree() {
  State& s = *state_;
  for (int level = static_cast<int>(s.layout.levels()) - 1; level >= 0; --level) {
    for (uint64_t i = 0; i < s.layout.level_blocks[level]; ++i) {
      EVS_ASSIGN_OR_RETURN(HashBlock unused, s.GetHashBlock(static_cast<uint32_t>(level), i));
      (void)unused;
    }
  }
  return OkStatus();
}

Status VerifyImageFile(const std::string& path, const Digest& root_digest, VerifyOptions options) {
  EVS_ASSIGN_OR_RETURN(auto source, FileBlockSource::Open(path, options.layer_name));
  const std::string& name = source->name();
  uint64_t hash_offset;
  if (options.hash_offset) {
    hash_offset = *options.hash_offset;
  } else {
    EVS_ASSIGN_OR_RETURN(hash_offset, LocateTree(source->fd(), name));
  }
  EVS_ASSIGN_OR_RETURN(auto tree, VerityTree::Open(source.get(), hash_offset, root_digest));
  const VerityParams& params = tree->params();
  const TreeLayout& layout = tree->layout();
  if (options.expected_salt && *options.expected_salt != params.salt) {
    return DataLossError(name, ": superblock salt ", SaltHex(params.salt),
                         " differs from the recorded salt ", SaltHex(*options.expected_salt));
  }
  if (source->size() != layout.end_offset) {
    return DataLossError(name, ": ", source->size() - layout.end_offset,
                         " unexpected bytes after the verity tree (which ends at ",
                         layout.end_offset, ")");
  }
  // veritysetup leaves the space between superblock and tree zero; so do we.
  {
    const uint64_t gap_start = hash_offset + kSuperblockSize;
    const uint64_t gap_end = layout.hash_start_block * layout.hash_block_size;
    std::vector<uint8_t> gap(gap_end - gap_start);
    EVS_RETURN_IF_ERROR(source->ReadAt(gap_start, gap.data(), gap.size()));
    if (std::any_of(gap.begin(), gap.end(), [](uint8_t b) { return b != 0; })) {
      return DataLossError(name, ": non-zero bytes between the superblock at ", hash_offset,
                           " and the hash tree at ", gap_end);
    }
  }
  // Top-down first, so that a bad hash block is named as such and not as a
  // mismatch of the data blocks below it.
  EVS_RETURN_IF_ERROR(tree->VerifyHashTree());

  const uint64_t n = params.data_blocks;
  const size_t bs = params.data_block_size;
  // Measured best for pread into a per-thread buffer that stays in cache.
  const size_t chunk_blocks = std::max<size_t>(1, (64u << 10) / bs);
  WorkerPool pool(options.threads > 0 ? options.threads : WorkerPool::DefaultThreads());
  int parts = static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(pool.size()), n));
  std::vector<Status> results(static_cast<size_t>(parts));
  pool.Run(parts, [&](int part) {
    uint64_t begin = n * static_cast<uint64_t>(part) / static_cast<uint64_t>(parts);
    uint64_t end = n * static_cast<uint64_t>(part + 1) / static_cast<uint64_t>(parts);
    std::vector<uint8_t> buf(chunk_blocks * bs);
    for (uint64_t b = begin; b < end; b += chunk_blocks) {
      size_t count = static_cast<size_t>(std::min<uint64_t>(chunk_blocks, end - b));
      Status st = source->ReadAt(b * bs, buf.data(), count * bs);
      if (st.ok()) st = tree->VerifyDataBlocks(b, buf.data(), count);
      if (!st.ok()) {
        results[static_cast<size_t>(part)] = st;
        return;
      }
    }
  });
  for (const Status& st : results) EVS_RETURN_IF_ERROR(st);
  return OkStatus();
}

}  // namespace evs::verity
