// A thin owner of a SQLite connection and its prepared statements, private
// to the snapshot module. Every failure is a Status naming the database file
// and the SQLite message.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "evs/common/status.h"

namespace evs::snapshot {

class SqliteDb;

// A prepared statement; finalized when destroyed. Bind indexes start at 1,
// column indexes at 0.
class Statement {
 public:
  Statement() = default;
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  ~Statement();

  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, std::string_view value);
  Statement& BindNull(int index);

  // Steps once: true when a row is available, false when done.
  Result<bool> Step();
  // Steps to completion, for statements without results.
  Status Run();
  // Makes the statement ready to run again (bindings are kept until rebound).
  void Reset();

  int64_t Int(int column) const;
  std::string Text(int column) const;
  bool IsNull(int column) const;

 private:
  friend class SqliteDb;
  Statement(SqliteDb* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  SqliteDb* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  Status bind_error_;
};

class SqliteDb {
 public:
  // Opens (creating) the database at `path` in WAL mode with foreign keys on
  // and synchronous=FULL, so a committed transaction survives power loss.
  static Result<SqliteDb> Open(const std::string& path);

  SqliteDb(SqliteDb&& other) noexcept;
  SqliteDb& operator=(SqliteDb&& other) noexcept;
  ~SqliteDb();

  Result<Statement> Prepare(std::string_view sql);
  // Runs one or more statements without results.
  Status Exec(std::string_view sql);
  int64_t LastInsertRowid() const;
  int Changes() const;

  const std::string& path() const { return path_; }
  // The error for the last failed call: "<path>: <what>: <sqlite message>".
  Status Error(std::string_view what) const;

 private:
  SqliteDb() = default;
  sqlite3* db_ = nullptr;
  std::string path_;
};

}  // namespace evs::snapshot
