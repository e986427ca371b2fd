// MetadataStore keeps containerd's snapshot model in SQLite: keys, parent
// chains, kinds, labels, layers and their references.
#include "evs/snapshot/metadata_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "test_util.h"

namespace evs::snapshot {
namespace {

using evs::testing::TempDir;

SnapshotRecord Active(const std::string& key, int64_t parent_id = 0, Labels labels = {}) {
  SnapshotRecord r;
  r.key = key;
  r.kind = Kind::kActive;
  r.parent_id = parent_id;
  r.labels = std::move(labels);
  r.created_ns = r.updated_ns = 1000;
  return r;
}

LayerRecord Layer(const std::string& hex_char) {
  LayerRecord l;
  l.digest = "sha256:" + std::string(64, hex_char[0]);
  l.file_size = 8192;
  l.image_size = 4096;
  l.root_digest = std::string(64, 'f');
  l.salt = "-";
  l.hash_offset = 4096;
  l.hash_algorithm = "sha256";
  l.usage = {8192, 3};
  return l;
}

class MetadataStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = MetadataStore::Open(dir_.Join("metadata.db"));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  // Inserts and commits a committed snapshot `name` on `parent_id` holding
  // a new layer; returns its id.
  int64_t Committed(const std::string& name, int64_t parent_id, const std::string& layer_char) {
    auto txn = store_->Begin();
    EXPECT_TRUE(txn.ok());
    auto id = store_->InsertSnapshot(Active(name + "-active", parent_id));
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    auto layer = store_->InsertLayer(Layer(layer_char));
    EXPECT_TRUE(layer.ok()) << layer.status().ToString();
    EXPECT_TRUE(store_->CommitSnapshot(*id, name, *layer, {8192, 3}, {}, 2000).ok());
    EXPECT_TRUE((*txn)->Commit().ok());
    return *id;
  }

  TempDir dir_;
  std::unique_ptr<MetadataStore> store_;
};

TEST_F(MetadataStoreTest, InsertedSnapshotIsFoundByKeyWithItsLabels) {
  auto id = store_->InsertSnapshot(Active("k1", 0, {{"a", "1"}, {"b", "2"}}));
  ASSERT_TRUE(id.ok());
  auto found = store_->FindSnapshot("k1");
  ASSERT_TRUE(found.ok());
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->id, *id);
  EXPECT_EQ((*found)->kind, Kind::kActive);
  EXPECT_EQ((*found)->labels, (Labels{{"a", "1"}, {"b", "2"}}));
  auto missing = store_->FindSnapshot("k2");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST_F(MetadataStoreTest, DuplicateKeyIsAlreadyExists) {
  ASSERT_TRUE(store_->InsertSnapshot(Active("dup")).ok());
  auto again = store_->InsertSnapshot(Active("dup"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists);
  EXPECT_NE(again.status().message().find("dup"), std::string::npos);
}

TEST_F(MetadataStoreTest, EmptyLabelValuesAreNotStored) {
  auto id = store_->InsertSnapshot(Active("k", 0, {{"keep", "v"}, {"drop", ""}}));
  ASSERT_TRUE(id.ok());
  auto r = store_->GetSnapshot(*id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->labels, (Labels{{"keep", "v"}}));
}

TEST_F(MetadataStoreTest, LabelsHoldArbitraryBytes) {
  std::string weird("a\0b\n\"'=,|", 9);
  auto id = store_->InsertSnapshot(Active("k", 0, {{weird, weird}}));
  ASSERT_TRUE(id.ok());
  auto r = store_->GetSnapshot(*id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->labels, (Labels{{weird, weird}}));
}

TEST_F(MetadataStoreTest, CommitRenamesKeepsIdAndReplacesLabels) {
  auto id = store_->InsertSnapshot(Active("active-key", 0, {{"old", "1"}}));
  ASSERT_TRUE(id.ok());
  auto layer = store_->InsertLayer(Layer("a"));
  ASSERT_TRUE(layer.ok());
  ASSERT_TRUE(store_->CommitSnapshot(*id, "committed", *layer, {10, 2}, {{"new", "2"}}, 5).ok());
  auto by_key = store_->FindSnapshot("active-key");
  ASSERT_TRUE(by_key.ok());
  EXPECT_FALSE(by_key->has_value());
  auto r = store_->FindSnapshot("committed");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->id, *id);
  EXPECT_EQ((*r)->kind, Kind::kCommitted);
  EXPECT_EQ((*r)->layer_id, *layer);
  EXPECT_EQ((*r)->usage.size, 10);
  EXPECT_EQ((*r)->labels, (Labels{{"new", "2"}}));
  EXPECT_EQ((*r)->created_ns, 5);
}

TEST_F(MetadataStoreTest, ALayerKeepsItsDiffIdAndWhereALazyOneIsFetchedFrom) {
  LayerRecord converted = Layer("c");
  converted.diff_id = "sha256:" + std::string(64, 'd');
  converted.lazy_repository = "127.0.0.1:5000/app";
  ASSERT_TRUE(store_->InsertLayer(converted).ok());
  ASSERT_TRUE(store_->InsertLayer(Layer("e")).ok());
  auto c = store_->FindLayer(converted.digest);
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ((*c)->diff_id, converted.diff_id);
  EXPECT_EQ((*c)->lazy_repository, converted.lazy_repository);
  auto e = store_->FindLayer(Layer("e").digest);
  ASSERT_TRUE(e.ok() && e->has_value());
  EXPECT_EQ((*e)->diff_id, "") << "unknown for a layer made from a directory";
}

TEST_F(MetadataStoreTest, CommitToATakenNameIsAlreadyExists) {
  Committed("taken", 0, "a");
  auto id = store_->InsertSnapshot(Active("b"));
  ASSERT_TRUE(id.ok());
  auto layer = store_->InsertLayer(Layer("b"));
  ASSERT_TRUE(layer.ok());
  Status s = store_->CommitSnapshot(*id, "taken", *layer, {}, {}, 1);
  EXPECT_EQ(s.code(), Code::kAlreadyExists);
}

TEST_F(MetadataStoreTest, AncestorsListsTheParentChainNearestFirst) {
  int64_t a = Committed("a", 0, "a");
  int64_t b = Committed("b", a, "b");
  int64_t c = Committed("c", b, "c");
  auto chain = store_->Ancestors(c);
  ASSERT_TRUE(chain.ok());
  ASSERT_EQ(chain->size(), 3u);
  EXPECT_EQ((*chain)[0].key, "c");
  EXPECT_EQ((*chain)[1].key, "b");
  EXPECT_EQ((*chain)[2].key, "a");
  EXPECT_EQ((*chain)[0].parent_key, "b");
  auto child = store_->InsertSnapshot(Active("child", c));
  ASSERT_TRUE(child.ok());
  auto has = store_->HasChildren(c);
  ASSERT_TRUE(has.ok());
  EXPECT_TRUE(*has);
  has = store_->HasChildren(*child);
  ASSERT_TRUE(has.ok());
  EXPECT_FALSE(*has);
}

TEST_F(MetadataStoreTest, ForeignKeysRefuseDeletingAParentOrAHeldLayer) {
  int64_t a = Committed("a", 0, "a");
  ASSERT_TRUE(store_->InsertSnapshot(Active("child", a)).ok());
  EXPECT_FALSE(store_->DeleteSnapshot(a).ok());
  auto r = store_->GetSnapshot(a);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(store_->DeleteLayer(r->layer_id).ok());
}

TEST_F(MetadataStoreTest, LayerReferencesCountSnapshotsHoldingIt) {
  int64_t a = Committed("a", 0, "a");
  auto r = store_->GetSnapshot(a);
  ASSERT_TRUE(r.ok());
  auto refs = store_->LayerReferences(r->layer_id);
  ASSERT_TRUE(refs.ok());
  EXPECT_EQ(*refs, 1);
  auto found = store_->FindLayer(Layer("a").digest);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->id, r->layer_id);
  EXPECT_EQ((*found)->usage.inodes, 3);
  ASSERT_TRUE(store_->DeleteSnapshot(a).ok());
  refs = store_->LayerReferences(r->layer_id);
  ASSERT_TRUE(refs.ok());
  EXPECT_EQ(*refs, 0);
}

TEST_F(MetadataStoreTest, ATransactionNotCommittedLeavesNothing) {
  {
    auto txn = store_->Begin();
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE(store_->InsertSnapshot(Active("gone")).ok());
  }
  auto r = store_->FindSnapshot("gone");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
}

TEST_F(MetadataStoreTest, IdsAreNeverReused) {
  auto first = store_->InsertSnapshot(Active("x"));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(store_->DeleteSnapshot(*first).ok());
  auto second = store_->InsertSnapshot(Active("x"));
  ASSERT_TRUE(second.ok());
  EXPECT_GT(*second, *first);
}

TEST_F(MetadataStoreTest, CommittedDataSurvivesReopen) {
  Committed("kept", 0, "a");
  store_.reset();
  auto s = MetadataStore::Open(dir_.Join("metadata.db"));
  ASSERT_TRUE(s.ok());
  auto r = (*s)->FindSnapshot("kept");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->has_value());
}

TEST(MetadataStoreSchema, ANewDatabaseGetsTheCurrentVersionInWalMode) {
  TempDir dir;
  ASSERT_TRUE(MetadataStore::Open(dir.Join("m.db")).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.Join("m.db").c_str(), &db), SQLITE_OK);
  auto query = [&](const char* sql) {
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, nullptr), SQLITE_OK);
    EXPECT_EQ(sqlite3_step(st), SQLITE_ROW);
    std::string v = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
  };
  EXPECT_EQ(query("PRAGMA user_version"), std::to_string(MetadataStore::CurrentSchemaVersion()));
  EXPECT_EQ(query("PRAGMA journal_mode"), "wal");
  sqlite3_close(db);
}

TEST(MetadataStoreSchema, ANewerSchemaIsRefusedNamingThePath) {
  TempDir dir;
  ASSERT_TRUE(MetadataStore::Open(dir.Join("m.db")).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.Join("m.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 999", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto s = MetadataStore::Open(dir.Join("m.db"));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(s.status().message().find(dir.Join("m.db")), std::string::npos);
}

TEST(MetadataStoreSchema, AVersion1DatabaseIsMigratedKeepingItsRows) {
  TempDir dir;
  std::string path = dir.Join("m.db");
  ASSERT_TRUE(MetadataStore::Open(path).ok());
  // Turn it back into what schema 1 wrote: no hash_block_size, hash_type
  // (schema 2), diff_id (schema 3), lazy_repository (schema 4).
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  std::string downgrade =
      "ALTER TABLE layers DROP COLUMN lazy_repository;"
      "ALTER TABLE layers DROP COLUMN diff_id;"
      "ALTER TABLE layers DROP COLUMN hash_block_size;"
      "ALTER TABLE layers DROP COLUMN hash_type;"
      "INSERT INTO layers (digest, file_size, image_size, block_size, "
      "root_digest, salt, hash_offset, hash_algorithm, usage_size, "
      "usage_inodes, created_ns) VALUES ('sha256:" +
      std::string(64, 'a') +
      "', 1, 1, 4096, 'ff', '-', 4096, 'sha256', 1, 1, 1);"
      "PRAGMA user_version = 1;";
  ASSERT_EQ(sqlite3_exec(db, downgrade.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = MetadataStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto layer = (*store)->FindLayer("sha256:" + std::string(64, 'a'));
  ASSERT_TRUE(layer.ok() && layer->has_value());
  EXPECT_EQ((*layer)->hash_block_size, 4096u);
  EXPECT_EQ((*layer)->hash_type, 1u);
  EXPECT_EQ((*layer)->root_digest, "ff");
  EXPECT_EQ((*layer)->diff_id, "");
  EXPECT_FALSE((*layer)->lazy());
}

TEST(MetadataStoreSchema, AFileThatIsNotADatabaseIsAnErrorNamingIt) {
  TempDir dir;
  evs::testing::WriteFile(dir.Join("m.db"), std::string(8192, 'x'));
  auto s = MetadataStore::Open(dir.Join("m.db"));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find(dir.Join("m.db")), std::string::npos);
}

}  // namespace
}  // namespace evs::snapshot
