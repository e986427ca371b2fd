// SnapshotFilter follows containerd 1.6's filter grammar exactly; most cases
// are containerd's own (filters/filter_test.go), applied to snapshot Info.
#include "evs/snapshot/filter.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace evs::snapshot {
namespace {

Info Snap(std::string name, Kind kind, std::string parent, Labels labels) {
  Info info;
  info.name = std::move(name);
  info.kind = kind;
  info.parent = std::move(parent);
  info.labels = std::move(labels);
  return info;
}

std::vector<Info> Corpus() {
  return {
      Snap("foo", Kind::kCommitted, "", {{"foo", "true"}}),
      Snap("bar", Kind::kActive, "foo", {{"foo", "false"}, {"bar", "true"}}),
      Snap("foo", Kind::kView, "", {{"more complex label", "true"}}),
      Snap("fooer", Kind::kCommitted, "bar",
           {{"more complex label with \\ and \"", "present"}, {"containerd.io/gc.root", "x"}}),
      Snap("baz", Kind::kActive, "", {}),
  };
}

// Indexes of the corpus entries that match.
std::vector<int> Matching(const std::vector<std::string>& filters) {
  auto f = SnapshotFilter::Parse(filters);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  std::vector<int> out;
  if (!f.ok()) return out;
  auto corpus = Corpus();
  for (size_t i = 0; i < corpus.size(); ++i) {
    if (f->Matches(corpus[i])) out.push_back(static_cast<int>(i));
  }
  return out;
}

std::string ParseError(const std::string& filter) {
  auto f = SnapshotFilter::Parse({filter});
  if (f.ok()) return "parsed";
  EXPECT_EQ(f.status().code(), Code::kInvalidArgument);
  return f.status().message();
}

TEST(SnapshotFilter, NoFiltersOrEmptyFilterMatchEverything) {
  EXPECT_EQ(Matching({}), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(Matching({""}), (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(SnapshotFilter, BareFieldTestsPresence) {
  EXPECT_EQ(Matching({"name"}), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(Matching({"labels.foo"}), (std::vector<int>{0, 1}));
  EXPECT_EQ(Matching({"labels.foo,name"}), (std::vector<int>{0, 1}));
  // `parent` is always present, even when empty (bolt.go adaptSnapshot).
  EXPECT_EQ(Matching({"parent"}), (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(SnapshotFilter, EqualityAndInequality) {
  EXPECT_EQ(Matching({"labels.foo==true"}), (std::vector<int>{0}));
  EXPECT_EQ(Matching({"name==bar"}), (std::vector<int>{1}));
  EXPECT_EQ(Matching({"name!=bar"}), (std::vector<int>{0, 2, 3, 4}));
  EXPECT_EQ(Matching({"name==bar,labels.bar"}), (std::vector<int>{1}));
  EXPECT_EQ(Matching({"name==bar,labels.bar==wrong"}), (std::vector<int>{}));
  // An absent field compares as "" for !=.
  EXPECT_EQ(Matching({"labels.foo!=true"}), (std::vector<int>{1, 2, 3, 4}));
}

TEST(SnapshotFilter, KindParentAndTheFiltersContainerdSends) {
  EXPECT_EQ(Matching({"kind==active"}), (std::vector<int>{1, 4}));
  EXPECT_EQ(Matching({"kind==view"}), (std::vector<int>{2}));
  EXPECT_EQ(Matching({"kind==committed"}), (std::vector<int>{0, 3}));
  EXPECT_EQ(Matching({"parent==foo"}), (std::vector<int>{1}));
  EXPECT_EQ(Matching({"parent!=\"\""}), (std::vector<int>{1, 3}));
  EXPECT_EQ(Matching({"labels.\"containerd.io/gc.root\"==x"}), (std::vector<int>{3}));
  // metadata/snapshot.go resolves remote snapshots with this shape.
  EXPECT_EQ(Matching({"labels.\"containerd.io/gc.root\"==x,parent==\"bar\""}),
            (std::vector<int>{3}));
}

TEST(SnapshotFilter, SeveralFilterStringsMatchWhenAnyDoes) {
  EXPECT_EQ(Matching({"name==bar", "name==baz"}), (std::vector<int>{1, 4}));
  EXPECT_EQ(Matching({"kind==view", "labels.bar==true"}), (std::vector<int>{1, 2}));
}

TEST(SnapshotFilter, QuotedFieldsAndValues) {
  EXPECT_EQ(Matching({"name==\"bar\""}), (std::vector<int>{1}));
  EXPECT_EQ(Matching({R"(name==foo,labels."more complex label")"}), (std::vector<int>{2}));
  EXPECT_EQ(Matching({R"(labels."more complex label with \\ and \""==present)"}),
            (std::vector<int>{3}));
}

TEST(SnapshotFilter, DottedLabelKeysJoinTheirParts) {
  std::vector<Info> corpus = {Snap("a", Kind::kActive, "", {{"a.b.c", "1"}})};
  auto f = SnapshotFilter::Parse({"labels.a.b.c==1"});
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->Matches(corpus[0]));
}

TEST(SnapshotFilter, AValueRunsToTheNextCommaSoPipesAreLiteral) {
  // containerd 1.6 has no "or" inside one filter: "active|view" is a value.
  EXPECT_EQ(Matching({"kind==active|view"}), (std::vector<int>{}));
  std::vector<Info> corpus = {Snap("a|b", Kind::kActive, "", {})};
  auto f = SnapshotFilter::Parse({"name==a|b"});
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->Matches(corpus[0]));
}

TEST(SnapshotFilter, RegularExpressionsWithSlashOrPipeQuotes) {
  EXPECT_EQ(Matching({"name~=^fo"}), (std::vector<int>{0, 2, 3}));
  EXPECT_EQ(Matching({"name~=/^ba[rz]$/"}), (std::vector<int>{1, 4}));
  EXPECT_EQ(Matching({"name~=|o{2}e|"}), (std::vector<int>{3}));
  EXPECT_EQ(Matching({"name~=/^(foo|bar)$/,kind==active"}), (std::vector<int>{1}));
}

TEST(SnapshotFilter, ARegularExpressionThatDoesNotCompileMatchesNothing) {
  EXPECT_EQ(Matching({"name~=/[/"}), (std::vector<int>{}));
}

TEST(SnapshotFilter, SyntaxErrorsNameTheFilterAndPosition) {
  EXPECT_NE(ParseError("labels.|foo|==x").find("invalid quote encountered"), std::string::npos);
  EXPECT_NE(ParseError("name==foo,").find("expected field or quoted"), std::string::npos);
  EXPECT_NE(ParseError("labels.").find("expected field or quoted"), std::string::npos);
  EXPECT_NE(ParseError("image~=,id?=?fbaq").find("expected value or quoted"), std::string::npos);
  EXPECT_NE(ParseError("labels.ns/key==value").find("quoted literal not terminated"),
            std::string::npos);
  EXPECT_NE(ParseError("labels.key==/value").find("quoted literal not terminated"),
            std::string::npos);
  EXPECT_NE(ParseError("name=>x").find("unsupported operator"), std::string::npos);
  std::string msg = ParseError("name==foo,");
  EXPECT_NE(msg.find("filter \"name==foo,\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("byte 10"), std::string::npos) << msg;
}

TEST(SnapshotFilter, HostileInputIsAnErrorNotACrash) {
  EXPECT_NE(ParseError(std::string("name==a\0b", 9)).find("unexpected"), std::string::npos);
  EXPECT_NE(ParseError("name==\xff\xfe").find("rune error"), std::string::npos);
  EXPECT_NE(ParseError("labels.\"unterminated").find("not terminated"), std::string::npos);
  EXPECT_NE(ParseError("labels.\"bad \\q escape\"").find("illegal escape"), std::string::npos);
  // Deep nesting and long inputs cost linear time: RE2 never backtracks.
  std::string long_re = "name~=/" + std::string(3000, '(') + "a" + std::string(3000, ')') + "/";
  auto f = SnapshotFilter::Parse({long_re});
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE(f->Matches(Snap(std::string(4096, 'b'), Kind::kActive, "", {})));
  auto g = SnapshotFilter::Parse({"name~=/(a*)*$/"});
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(g->Matches(Snap(std::string(4000, 'a') + "!", Kind::kActive, "", {})));
}

}  // namespace
}  // namespace evs::snapshot
