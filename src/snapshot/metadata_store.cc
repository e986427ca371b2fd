#include "evs/snapshot/metadata_store.h"

#include <utility>

#include "sqlite_db.h"

namespace evs::snapshot {
namespace {

// Migration i takes the schema from version i to i + 1. Append, never edit:
// a root written by an older build is migrated forward on open.
const char* const kMigrations[] = {
    // 0 -> 1: the first schema.
    R"sql(
CREATE TABLE layers (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  digest TEXT NOT NULL UNIQUE,
  file_size INTEGER NOT NULL,
  image_size INTEGER NOT NULL,
  block_size INTEGER NOT NULL,
  root_digest TEXT NOT NULL,
  salt TEXT NOT NULL,
  hash_offset INTEGER NOT NULL,
  hash_algorithm TEXT NOT NULL,
  usage_size INTEGER NOT NULL,
  usage_inodes INTEGER NOT NULL,
  created_ns INTEGER NOT NULL
);
CREATE TABLE snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),
  parent_id INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT,
  layer_id INTEGER REFERENCES layers(id) ON DELETE RESTRICT,
  created_ns INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  usage_size INTEGER NOT NULL DEFAULT 0,
  usage_inodes INTEGER NOT NULL DEFAULT 0,
  CHECK ((kind = 3) = (layer_id IS NOT NULL))
);
CREATE INDEX snapshots_parent ON snapshots(parent_id);
CREATE INDEX snapshots_layer ON snapshots(layer_id);
CREATE TABLE labels (
  snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (snapshot_id, key)
) WITHOUT ROWID;
)sql",
    // 1 -> 2: what kernel dm-verity activation needs besides the root digest.
    R"sql(
ALTER TABLE layers ADD COLUMN hash_block_size INTEGER NOT NULL DEFAULT 4096;
ALTER TABLE layers ADD COLUMN hash_type INTEGER NOT NULL DEFAULT 1;
)sql",
    // 2 -> 3: the diffID of a layer converted from a blob (convert-on-pull),
    // so a later pull can check the stored layer against the chain ID it is
    // asked for without fetching it again. Empty for unpacked layers.
    R"sql(
ALTER TABLE layers ADD COLUMN diff_id TEXT NOT NULL DEFAULT '';
)sql",
    // 3 -> 4: lazy layers (DESIGN.md §1): the repository their blob is
    // fetched from on demand; empty for layers stored in full.
    R"sql(
ALTER TABLE layers ADD COLUMN lazy_repository TEXT NOT NULL DEFAULT '';
)sql",
};
constexpr int kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

constexpr const char* kSnapshotColumns =
    "s.id, s.key, s.kind, s.parent_id, p.key, s.layer_id, s.created_ns, s.updated_ns, "
    "s.usage_size, s.usage_inodes FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id";

constexpr const char* kLayerColumns =
    "id, digest, file_size, image_size, block_size, root_digest, salt, hash_offset, "
    "hash_algorithm, usage_size, usage_inodes, created_ns, hash_block_size, hash_type, diff_id, "
    "lazy_repository FROM layers";

class SqliteTransaction : public MetadataStore::Transaction {
 public:
  explicit SqliteTransaction(SqliteDb* db) : db_(db) {}
  ~SqliteTransaction() override {
    if (!done_) (void)db_->Exec("ROLLBACK");
  }
  Status Commit() override {
    EVS_RETURN_IF_ERROR(db_->Exec("COMMIT"));
    done_ = true;
    return OkStatus();
  }

 private:
  SqliteDb* db_;
  bool done_ = false;
};

class SqliteMetadataStore : public MetadataStore {
 public:
  explicit SqliteMetadataStore(SqliteDb db) : db_(std::move(db)) {}

  Status Migrate() {
    EVS_RETURN_IF_ERROR(db_.Exec("BEGIN IMMEDIATE"));
    SqliteTransaction txn(&db_);
    EVS_ASSIGN_OR_RETURN(Statement version, db_.Prepare("PRAGMA user_version"));
    EVS_ASSIGN_OR_RETURN(bool row, version.Step());
    int current = row ? static_cast<int>(version.Int(0)) : 0;
    version = Statement();
    if (current > kSchemaVersion) {
      return FailedPreconditionError(db_.path(), ": schema version ", current,
                                     " is newer than this build understands (", kSchemaVersion,
                                     "); run a newer containerd-evs-grpc");
    }
    for (int v = current; v < kSchemaVersion; ++v) {
      EVS_RETURN_IF_ERROR(db_.Exec(kMigrations[v]).Annotate(StrCat("migrate to schema ", v + 1)));
    }
    if (current != kSchemaVersion) {
      EVS_RETURN_IF_ERROR(db_.Exec(StrCat("PRAGMA user_version = ", kSchemaVersion)));
    }
    return txn.Commit();
  }

  Result<std::unique_ptr<Transaction>> Begin() override {
    EVS_RETURN_IF_ERROR(db_.Exec("BEGIN IMMEDIATE"));
    return std::unique_ptr<Transaction>(new SqliteTransaction(&db_));
  }

  Result<std::optional<SnapshotRecord>> FindSnapshot(const std::string& key) override {
    EVS_ASSIGN_OR_RETURN(Statement st,
                         db_.Prepare(StrCat("SELECT ", kSnapshotColumns, " WHERE s.key = ?")));
    st.Bind(1, key);
    EVS_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<SnapshotRecord>();
    SnapshotRecord r = ReadSnapshot(st);
    st = Statement();
    EVS_RETURN_IF_ERROR(LoadLabels(&r));
    return std::optional<SnapshotRecord>(std::move(r));
  }

  Result<SnapshotRecord> GetSnapshot(int64_t id) override {
    EVS_ASSIGN_OR_RETURN(Statement st,
                         db_.Prepare(StrCat("SELECT ", kSnapshotColumns, " WHERE s.id = ?")));
    st.Bind(1, id);
    EVS_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return NotFoundError("snapshot id ", id, " does not exist");
    SnapshotRecord r = ReadSnapshot(st);
    st = Statement();
    EVS_RETURN_IF_ERROR(LoadLabels(&r));
    return r;
  }

  Result<std::vector<SnapshotRecord>> Ancestors(int64_t parent_id) override {
    std::vector<SnapshotRecord> chain;
    // A chain is at most as long as the table; the bound turns a cycle
    // (impossible through this API, but the file is input) into an error.
    EVS_ASSIGN_OR_RETURN(Statement count, db_.Prepare("SELECT COUNT(*) FROM snapshots"));
    EVS_RETURN_IF_ERROR(count.Step().status());
    int64_t limit = count.Int(0);
    for (int64_t id = parent_id; id != 0;) {
      if (static_cast<int64_t>(chain.size()) > limit) {
        return DataLossError(db_.path(), ": parent chain of snapshot id ", parent_id,
                             " has a cycle");
      }
      EVS_ASSIGN_OR_RETURN(SnapshotRecord r, GetSnapshot(id));
      id = r.parent_id;
      chain.push_back(std::move(r));
    }
    return chain;
  }

  Result<int64_t> InsertSnapshot(const SnapshotRecord& r) override {
    EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> existing, FindSnapshot(r.key));
    if (existing) return AlreadyExistsError("snapshot ", r.key, ": already exists");
    EVS_ASSIGN_OR_RETURN(
        Statement st,
        db_.Prepare("INSERT INTO snapshots (key, kind, parent_id, layer_id, created_ns, "
                    "updated_ns, usage_size, usage_inodes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
    st.Bind(1, r.key).Bind(2, static_cast<int64_t>(r.kind));
    if (r.parent_id != 0)
      st.Bind(3, r.parent_id);
    else
      st.BindNull(3);
    if (r.layer_id != 0)
      st.Bind(4, r.layer_id);
    else
      st.BindNull(4);
    st.Bind(5, r.created_ns).Bind(6, r.updated_ns).Bind(7, r.usage.size).Bind(8, r.usage.inodes);
    EVS_RETURN_IF_ERROR(st.Run().Annotate(StrCat("insert snapshot ", r.key)));
    int64_t id = db_.LastInsertRowid();
    EVS_RETURN_IF_ERROR(WriteLabels(id, r.labels));
    return id;
  }

  Status CommitSnapshot(int64_t id, const std::string& name, int64_t layer_id, const Usage& usage,
                        const Labels& labels, int64_t now_ns) override {
    EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> existing, FindSnapshot(name));
    if (existing) return AlreadyExistsError("committed snapshot ", name, ": already exists");
    EVS_ASSIGN_OR_RETURN(
        Statement st,
        db_.Prepare("UPDATE snapshots SET key = ?, kind = 3, layer_id = ?, created_ns = ?, "
                    "updated_ns = ?, usage_size = ?, usage_inodes = ? WHERE id = ? AND kind = 2"));
    st.Bind(1, name).Bind(2, layer_id).Bind(3, now_ns).Bind(4, now_ns).Bind(5, usage.size);
    st.Bind(6, usage.inodes).Bind(7, id);
    EVS_RETURN_IF_ERROR(st.Run().Annotate(StrCat("commit snapshot ", name)));
    if (db_.Changes() != 1) {
      return FailedPreconditionError("snapshot id ", id, " is not active; cannot commit as ", name);
    }
    return WriteLabels(id, labels);
  }

  Status UpdateLabels(int64_t id, const Labels& labels, int64_t now_ns) override {
    EVS_ASSIGN_OR_RETURN(Statement st,
                         db_.Prepare("UPDATE snapshots SET updated_ns = ? WHERE id = ?"));
    st.Bind(1, now_ns).Bind(2, id);
    EVS_RETURN_IF_ERROR(st.Run());
    return WriteLabels(id, labels);
  }

  Status DeleteSnapshot(int64_t id) override {
    EVS_ASSIGN_OR_RETURN(Statement st, db_.Prepare("DELETE FROM snapshots WHERE id = ?"));
    st.Bind(1, id);
    return st.Run().Annotate(StrCat("delete snapshot id ", id));
  }

  Result<bool> HasChildren(int64_t id) override {
    EVS_ASSIGN_OR_RETURN(Statement st,
                         db_.Prepare("SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1"));
    st.Bind(1, id);
    return st.Step();
  }

  Status ForEachSnapshot(const std::function<Status(const SnapshotRecord&)>& fn) override {
    // Read everything first: `fn` may run further queries.
    std::vector<SnapshotRecord> all;
    {
      EVS_ASSIGN_OR_RETURN(Statement st,
                           db_.Prepare(StrCat("SELECT ", kSnapshotColumns, " ORDER BY s.id")));
      for (;;) {
        EVS_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        all.push_back(ReadSnapshot(st));
      }
    }
    {
      EVS_ASSIGN_OR_RETURN(
          Statement st,
          db_.Prepare("SELECT snapshot_id, key, value FROM labels ORDER BY snapshot_id"));
      size_t i = 0;
      for (;;) {
        EVS_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        int64_t sid = st.Int(0);
        while (i < all.size() && all[i].id < sid) ++i;
        if (i < all.size() && all[i].id == sid) all[i].labels[st.Text(1)] = st.Text(2);
      }
    }
    for (const SnapshotRecord& r : all) EVS_RETURN_IF_ERROR(fn(r));
    return OkStatus();
  }

  Result<std::optional<LayerRecord>> FindLayer(const std::string& digest) override {
    EVS_ASSIGN_OR_RETURN(Statement st,
                         db_.Prepare(StrCat("SELECT ", kLayerColumns, " WHERE digest = ?")));
    st.Bind(1, digest);
    EVS_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<LayerRecord>();
    return std::optional<LayerRecord>(ReadLayer(st));
  }

  Result<LayerRecord> GetLayer(int64_t id) override {
    EVS_ASSIGN_OR_RETURN(Statement st,
                         db_.Prepare(StrCat("SELECT ", kLayerColumns, " WHERE id = ?")));
    st.Bind(1, id);
    EVS_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return NotFoundError("layer id ", id, " does not exist");
    return ReadLayer(st);
  }

  Result<int64_t> InsertLayer(const LayerRecord& r) override {
    EVS_ASSIGN_OR_RETURN(std::optional<LayerRecord> existing, FindLayer(r.digest));
    if (existing) return AlreadyExistsError("layer ", r.digest, ": already exists");
    EVS_ASSIGN_OR_RETURN(
        Statement st,
        db_.Prepare("INSERT INTO layers (digest, file_size, image_size, block_size, root_digest, "
                    "salt, hash_offset, hash_algorithm, usage_size, usage_inodes, created_ns, "
                    "hash_block_size, hash_type, diff_id, lazy_repository) VALUES (?, ?, ?, ?, ?, "
                    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    st.Bind(1, r.digest)
        .Bind(2, static_cast<int64_t>(r.file_size))
        .Bind(3, static_cast<int64_t>(r.image_size))
        .Bind(4, static_cast<int64_t>(r.block_size))
        .Bind(5, r.root_digest)
        .Bind(6, r.salt)
        .Bind(7, static_cast<int64_t>(r.hash_offset))
        .Bind(8, r.hash_algorithm)
        .Bind(9, r.usage.size)
        .Bind(10, r.usage.inodes)
        .Bind(11, r.created_ns)
        .Bind(12, static_cast<int64_t>(r.hash_block_size))
        .Bind(13, static_cast<int64_t>(r.hash_type))
        .Bind(14, r.diff_id)
        .Bind(15, r.lazy_repository);
    EVS_RETURN_IF_ERROR(st.Run().Annotate(StrCat("insert layer ", r.digest)));
    return db_.LastInsertRowid();
  }

  Status DeleteLayer(int64_t id) override {
    EVS_ASSIGN_OR_RETURN(Statement st, db_.Prepare("DELETE FROM layers WHERE id = ?"));
    st.Bind(1, id);
    return st.Run().Annotate(StrCat("delete layer id ", id));
  }

  Result<int64_t> LayerReferences(int64_t id) override {
    EVS_ASSIGN_OR_RETURN(Statement st,
                         db_.Prepare("SELECT COUNT(*) FROM snapshots WHERE layer_id = ?"));
    st.Bind(1, id);
    EVS_RETURN_IF_ERROR(st.Step().status());
    return st.Int(0);
  }

  Status ForEachLayer(const std::function<Status(const LayerRecord&)>& fn) override {
    std::vector<LayerRecord> all;
    {
      EVS_ASSIGN_OR_RETURN(Statement st,
                           db_.Prepare(StrCat("SELECT ", kLayerColumns, " ORDER BY id")));
      for (;;) {
        EVS_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        all.push_back(ReadLayer(st));
      }
    }
    for (const LayerRecord& r : all) EVS_RETURN_IF_ERROR(fn(r));
    return OkStatus();
  }

 private:
  static SnapshotRecord ReadSnapshot(const Statement& st) {
    SnapshotRecord r;
    r.id = st.Int(0);
    r.key = st.Text(1);
    r.kind = static_cast<Kind>(st.Int(2));
    r.parent_id = st.IsNull(3) ? 0 : st.Int(3);
    r.parent_key = st.IsNull(4) ? std::string() : st.Text(4);
    r.layer_id = st.IsNull(5) ? 0 : st.Int(5);
    r.created_ns = st.Int(6);
    r.updated_ns = st.Int(7);
    r.usage.size = st.Int(8);
    r.usage.inodes = st.Int(9);
    return r;
  }

  static LayerRecord ReadLayer(const Statement& st) {
    LayerRecord r;
    r.id = st.Int(0);
    r.digest = st.Text(1);
    r.file_size = static_cast<uint64_t>(st.Int(2));
    r.image_size = static_cast<uint64_t>(st.Int(3));
    r.block_size = static_cast<uint32_t>(st.Int(4));
    r.root_digest = st.Text(5);
    r.salt = st.Text(6);
    r.hash_offset = static_cast<uint64_t>(st.Int(7));
    r.hash_algorithm = st.Text(8);
    r.usage.size = st.Int(9);
    r.usage.inodes = st.Int(10);
    r.created_ns = st.Int(11);
    r.hash_block_size = static_cast<uint32_t>(st.Int(12));
    r.hash_type = static_cast<uint32_t>(st.Int(13));
    r.diff_id = st.Text(14);
    r.lazy_repository = st.Text(15);
    return r;
  }

  Status LoadLabels(SnapshotRecord* r) {
    EVS_ASSIGN_OR_RETURN(Statement st,
                         db_.Prepare("SELECT key, value FROM labels WHERE snapshot_id = ?"));
    st.Bind(1, r->id);
    for (;;) {
      EVS_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return OkStatus();
      r->labels[st.Text(0)] = st.Text(1);
    }
  }

  // Replaces the labels of snapshot `id`. Empty values are not stored:
  // containerd treats setting a label to "" as removing it
  // (metadata/boltutil/helpers.go writeMap).
  Status WriteLabels(int64_t id, const Labels& labels) {
    {
      EVS_ASSIGN_OR_RETURN(Statement del, db_.Prepare("DELETE FROM labels WHERE snapshot_id = ?"));
      del.Bind(1, id);
      EVS_RETURN_IF_ERROR(del.Run());
    }
    EVS_ASSIGN_OR_RETURN(
        Statement ins,
        db_.Prepare("INSERT INTO labels (snapshot_id, key, value) VALUES (?, ?, ?)"));
    for (const auto& [k, v] : labels) {
      if (v.empty()) continue;
      ins.Bind(1, id).Bind(2, k).Bind(3, v);
      EVS_RETURN_IF_ERROR(ins.Run().Annotate(StrCat("label ", k.substr(0, 64))));
      ins.Reset();
    }
    return OkStatus();
  }

  SqliteDb db_;
};

}  // namespace

Info SnapshotRecord::ToInfo() const {
  Info info;
  info.name = key;
  info.parent = parent_key;
  info.kind = kind;
  info.created_ns = created_ns;
  info.updated_ns = updated_ns;
  info.labels = labels;
  return info;
}

int MetadataStore::CurrentSchemaVersion() { return kSchemaVersion; }

Result<std::unique_ptr<MetadataStore>> MetadataStore::Open(const std::string& path) {
  EVS_ASSIGN_OR_RETURN(SqliteDb db, SqliteDb::Open(path));
  auto store = std::make_unique<SqliteMetadataStore>(std::move(db));
  EVS_RETURN_IF_ERROR(store->Migrate());
  return std::unique_ptr<MetadataStore>(std::move(store));
}

}  // namespace evs::snapshot
