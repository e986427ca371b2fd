// MetadataStore: the snapshotter's metadata in SQLite (DESIGN.md §3
// metadata.db): snapshots, their labels, and the layers committed snapshots
// point to. WAL journal, foreign keys enforced, synchronous=FULL, and a
// schema version (PRAGMA user_version) with forward migrations applied on
// open.
//
// Every operation runs inside a Transaction, and callers use one
// transaction per snapshot operation, committed only after the files the
// rows name exist (DESIGN.md §3; containerd snapshots/overlay/overlay.go
// follows the same pattern). Not thread-safe: the owner serialises access.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "evs/common/status.h"
#include "evs/snapshot/types.h"

namespace evs::snapshot {

// A snapshot row. `id` never changes and is never reused: it names the
// directory snapshots/<id>/ of an active or view snapshot.
struct SnapshotRecord {
  int64_t id = 0;
  std::string key;  // the key, or the name once committed
  Kind kind = Kind::kUnknown;
  int64_t parent_id = 0;   // 0: no parent
  std::string parent_key;  // the parent's name, "" without parent
  int64_t layer_id = 0;    // committed snapshots: the layer they hold
  int64_t created_ns = 0;
  int64_t updated_ns = 0;
  Usage usage;  // recorded at commit; 0 for active and view
  Labels labels;

  Info ToInfo() const;
};

// A layer image: layers/sha256/<hex>/layer.erofs (DESIGN.md §3; no sidecar
// files, so everything needed to verify and mount it lives here). `id`
// names its read-only mount point m/<id>/ and is never reused.
struct LayerRecord {
  int64_t id = 0;
  // "sha256:<hex>": the blob digest it came from, or for a layer made from
  // a directory (the unpack path) the digest of its content.
  std::string digest;
  // "sha256:<hex>" of the uncompressed tar, for a layer converted from a
  // blob with the diffID computed (convert-on-pull); empty otherwise.
  std::string diff_id;
  // A lazy layer (DESIGN.md §1 "lazy"): the repository ("host/name") its
  // blob is read from on demand. Its file is cache/<hex>/layer.erofs,
  // filled block by block (lazy/lazy_layer.h); empty for a layer stored in
  // full under layers/.
  std::string lazy_repository;
  bool lazy() const { return !lazy_repository.empty(); }
  uint64_t file_size = 0;      // layer.erofs including the verity tree
  uint64_t image_size = 0;     // the EROFS part
  uint32_t block_size = 4096;  // EROFS and verity data block size
  uint32_t hash_block_size = 4096;
  uint32_t hash_type = 1;  // dm-verity format version
  // dm-verity (reference/erofs-and-dm-verity-format.md §2); root_digest is
  // empty for a layer stored without a tree.
  std::string root_digest;     // hex
  std::string salt;            // hex
  uint64_t hash_offset = 0;    // where the superblock and tree start
  std::string hash_algorithm;  // "sha256"
  Usage usage;                 // allocated bytes of the file, EROFS inodes
  int64_t created_ns = 0;
};

class MetadataStore {
 public:
  // Opens or creates the database, migrating an older schema forward in one
  // transaction. A schema newer than this build is FailedPrecondition (do
  // not run an older daemon on a newer root). Errors name the path.
  static Result<std::unique_ptr<MetadataStore>> Open(const std::string& path);
  virtual ~MetadataStore() = default;

  // The schema version this build writes.
  static int CurrentSchemaVersion();

  // An open transaction; rolled back when destroyed without Commit().
  class Transaction {
   public:
    virtual ~Transaction() = default;
    virtual Status Commit() = 0;
  };
  // BEGIN IMMEDIATE: the write lock is taken at once, so two transactions
  // never deadlock upgrading from read to write.
  virtual Result<std::unique_ptr<Transaction>> Begin() = 0;

  // --- snapshots (call inside a transaction) ---

  // The snapshot with this key or committed name, or nullopt.
  virtual Result<std::optional<SnapshotRecord>> FindSnapshot(const std::string& key) = 0;
  virtual Result<SnapshotRecord> GetSnapshot(int64_t id) = 0;
  // The committed ancestors of a snapshot with parent `parent_id`, nearest
  // first (parent, grandparent, …). Costs one query per ancestor.
  virtual Result<std::vector<SnapshotRecord>> Ancestors(int64_t parent_id) = 0;
  // Inserts an active or view snapshot; returns its new id. AlreadyExists
  // when the key is taken.
  virtual Result<int64_t> InsertSnapshot(const SnapshotRecord& record) = 0;
  // Turns active snapshot `id` into the committed snapshot `name` holding
  // `layer_id`, with new timestamps, usage and labels (labels are replaced,
  // not inherited, as containerd does). AlreadyExists when the name is taken.
  virtual Status CommitSnapshot(int64_t id, const std::string& name, int64_t layer_id,
                                const Usage& usage, const Labels& labels, int64_t now_ns) = 0;
  virtual Status UpdateLabels(int64_t id, const Labels& labels, int64_t now_ns) = 0;
  virtual Status DeleteSnapshot(int64_t id) = 0;
  virtual Result<bool> HasChildren(int64_t id) = 0;
  // Calls `fn` for every snapshot in id order; stops at the first error.
  virtual Status ForEachSnapshot(const std::function<Status(const SnapshotRecord&)>& fn) = 0;

  // --- layers ---

  virtual Result<std::optional<LayerRecord>> FindLayer(const std::string& digest) = 0;
  virtual Result<LayerRecord> GetLayer(int64_t id) = 0;
  // Inserts a layer; returns its id. AlreadyExists when the digest is taken.
  virtual Result<int64_t> InsertLayer(const LayerRecord& record) = 0;
  virtual Status DeleteLayer(int64_t id) = 0;
  // How many snapshots hold the layer.
  virtual Result<int64_t> LayerReferences(int64_t id) = 0;
  virtual Status ForEachLayer(const std::function<Status(const LayerRecord&)>& fn) = 0;
};

}  // namespace evs::snapshot
