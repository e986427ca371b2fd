// containerd's filter language for List (containerd filters/parser.go,
// containerd 1.6), applied to snapshot Info the way containerd's metadata
// storage adapts it (snapshots/storage/bolt.go adaptSnapshot):
//
//   selectors := selector ("," selector)*        all must match
//   selector  := fieldpath [operator value]      no operator: field present
//   fieldpath := field ("." field)*
//   field     := quoted | [A-Za-z0-9_]+
//   operator  := "==" | "!=" | "~="              ~= is a regular expression
//   value     := quoted | [^\s,]+
//   quoted    := Go string syntax in "…"; for ~= also /…/ and |…|
//
// Fields: `name`, `parent`, `kind` (active|view|committed), and
// `labels.<key>` where the key may be quoted (`labels."containerd.io/gc.root"`)
// or dotted (`labels.a.b` is the label "a.b"). Several filter strings match
// when any of them does; no filter strings match everything. Regular
// expressions use RE2 (the syntax of Go's regexp), which runs in linear time
// on any input, so hostile patterns cannot stall the daemon.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "evs/common/status.h"
#include "evs/snapshot/types.h"

namespace evs::snapshot {

class SnapshotFilter {
 public:
  // Parses filter strings. A syntax error is InvalidArgument naming the
  // filter and the position ("filter \"name==\": position 6: expected value
  // or quoted"). Costs O(total length).
  static Result<SnapshotFilter> Parse(const std::vector<std::string>& filters);

  SnapshotFilter(SnapshotFilter&&) noexcept;
  SnapshotFilter& operator=(SnapshotFilter&&) noexcept;
  ~SnapshotFilter();

  // True when `info` matches any of the parsed filters (or there were none).
  // Thread-safe; costs O(selectors) plus regular expression matching.
  bool Matches(const Info& info) const;

 private:
  struct Compiled;
  explicit SnapshotFilter(std::unique_ptr<Compiled> compiled);
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace evs::snapshot
