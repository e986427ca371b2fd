// A port of containerd 1.6's filters package (filters/scanner.go,
// filters/parser.go, filters/quote.go, filters/filter.go) for snapshot Info.
// The scanner and parser follow the Go code step by step, quirks included
// (a value runs to the next ',' or space, so "kind==active|view" is the one
// value "active|view"; whitespace is only skipped before a token), because
// containerd and the CRI build filter strings for that exact grammar.
#include "evs/snapshot/filter.h"

#include <re2/re2.h>

#include <cstdint>
#include <optional>

#include "evs/common/log.h"

namespace evs::snapshot {
namespace {

// Tokens, as in filters/scanner.go: negative values, or a rune itself.
constexpr int32_t kTokenEof = -1;
constexpr int32_t kTokenQuoted = -2;
constexpr int32_t kTokenValue = -3;
constexpr int32_t kTokenField = -4;
constexpr int32_t kTokenSeparator = -5;
constexpr int32_t kTokenOperator = -6;
constexpr int32_t kTokenIllegal = -7;

constexpr int32_t kRuneError = 0xFFFD;
constexpr int32_t kMaxRune = 0x10FFFF;

// utf8.DecodeRuneInString: (rune, width); invalid input is (RuneError, 1),
// empty input (RuneError, 0).
std::pair<int32_t, int> DecodeRune(std::string_view s) {
  if (s.empty()) return {kRuneError, 0};
  auto b0 = static_cast<uint8_t>(s[0]);
  if (b0 < 0x80) return {b0, 1};
  int need;
  int32_t r;
  int32_t min;
  if ((b0 & 0xE0) == 0xC0) {
    need = 1, r = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    need = 2, r = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    need = 3, r = b0 & 0x07, min = 0x10000;
  } else {
    return {kRuneError, 1};
  }
  if (s.size() < static_cast<size_t>(need) + 1) return {kRuneError, 1};
  for (int i = 1; i <= need; ++i) {
    auto b = static_cast<uint8_t>(s[i]);
    if ((b & 0xC0) != 0x80) return {kRuneError, 1};
    r = (r << 6) | (b & 0x3F);
  }
  if (r < min || r > kMaxRune || (r >= 0xD800 && r <= 0xDFFF)) return {kRuneError, 1};
  return {r, need + 1};
}

void EncodeRune(int32_t r, std::string* out) {
  if (r < 0 || r > kMaxRune || (r >= 0xD800 && r <= 0xDFFF)) r = kRuneError;
  if (r < 0x80) {
    out->push_back(static_cast<char>(r));
  } else if (r < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (r >> 6)));
    out->push_back(static_cast<char>(0x80 | (r & 0x3F)));
  } else if (r < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (r >> 12)));
    out->push_back(static_cast<char>(0x80 | ((r >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (r & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (r >> 18)));
    out->push_back(static_cast<char>(0x80 | ((r >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((r >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (r & 0x3F)));
  }
}

// unicode.IsSpace for the runes Go counts as white space.
bool IsSpaceRune(int32_t r) {
  switch (r) {
    case '\t':
    case '\n':
    case '\v':
    case '\f':
    case '\r':
    case ' ':
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return r >= 0x2000 && r <= 0x200A;
  }
}

bool IsFieldRune(int32_t r) {
  return r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9');
}
bool IsOperatorRune(int32_t r) { return r == '=' || r == '!' || r == '~'; }
bool IsQuoteRune(int32_t r) { return r == '/' || r == '|' || r == '"'; }
bool IsSeparatorRune(int32_t r) { return r == ',' || r == '.'; }
// Go: r != ',' && !IsSpace(r) && (IsLetter || IsDigit || IsNumber ||
// IsGraphic || IsPunct). For every rune a decoder can produce that leaves out
// only control characters (C0, DEL, C1) and the other non-graphic runes,
// which we approximate as the C0/C1 controls.
bool IsValueRune(int32_t r) {
  if (r < 0 || r == ',' || IsSpaceRune(r)) return false;
  if (r < 0x20 || (r >= 0x7F && r < 0xA0)) return false;
  return true;
}

int DigitVal(int32_t ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return 16;
}

class Scanner {
 public:
  explicit Scanner(std::string_view input) : input_(input) {}

  struct Scanned {
    size_t pos;
    int32_t token;
    std::string_view text;
  };

  int32_t Peek() {
    size_t pos = pos_, ppos = ppos_;
    int32_t ch = Next();
    pos_ = pos;
    ppos_ = ppos;
    return ch;
  }

  Scanned Scan() {
    int32_t ch = Next();
    size_t pos = pos_;
    for (;;) {
      if (ch == kTokenEof || ch == kTokenIllegal) break;
      if (IsQuoteRune(ch)) {
        if (!ScanQuoted(ch)) return {pos, kTokenIllegal, input_.substr(pos, ppos_ - pos)};
        return {pos, kTokenQuoted, input_.substr(pos, ppos_ - pos)};
      }
      if (IsSeparatorRune(ch)) {
        value_ = false;
        return {pos, kTokenSeparator, input_.substr(pos, ppos_ - pos)};
      }
      if (IsOperatorRune(ch)) {
        while (IsOperatorRune(Peek())) Next();
        value_ = true;
        return {pos, kTokenOperator, input_.substr(pos, ppos_ - pos)};
      }
      if (IsSpaceRune(ch)) {
        ch = Next();
        pos = pos_;
        continue;
      }
      if (value_) {
        while (IsValueRune(Peek())) Next();
        value_ = false;
        return {pos, kTokenValue, input_.substr(pos, ppos_ - pos)};
      }
      if (IsFieldRune(ch)) {
        while (IsFieldRune(Peek())) Next();
        return {pos, kTokenField, input_.substr(pos, ppos_ - pos)};
      }
      break;
    }
    return {pos_, ch, {}};
  }

  size_t ppos() const { return ppos_; }
  const std::string& error() const { return err_; }

 private:
  int32_t Next() {
    if (pos_ >= input_.size()) return kTokenEof;
    pos_ = ppos_;
    auto [r, w] = DecodeRune(input_.substr(ppos_));
    ppos_ += w;
    if (r == kRuneError) {
      if (w > 0) {
        Error("rune error");
        return kTokenIllegal;
      }
      return kTokenEof;
    }
    if (r == 0) {
      Error("unexpected null");
      return kTokenIllegal;
    }
    return r;
  }

  bool ScanQuoted(int32_t quote) {
    bool illegal = false;
    int32_t ch = Next();
    while (ch != quote) {
      if (ch == '\n' || ch < 0) {
        Error("quoted literal not terminated");
        return false;
      }
      if (ch == '\\') {
        bool legal;
        ch = ScanEscape(quote, &legal);
        if (!legal) illegal = true;
      } else {
        ch = Next();
      }
    }
    return !illegal;
  }

  int32_t ScanEscape(int32_t quote, bool* legal) {
    *legal = false;
    int32_t ch = Next();
    switch (ch) {
      case 'a':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
      case 'v':
      case '\\':
        ch = Next();
        *legal = true;
        return ch;
      case '0':
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
      case '7':
        return ScanDigits(ch, 8, 3, legal);
      case 'x':
        return ScanDigits(Next(), 16, 2, legal);
      case 'u':
        return ScanDigits(Next(), 16, 4, legal);
      case 'U':
        return ScanDigits(Next(), 16, 8, legal);
      default:
        if (ch == quote) {
          *legal = true;
          return Next();
        }
        Error("illegal escape sequence");
        return ch;
    }
  }

  int32_t ScanDigits(int32_t ch, int base, int n, bool* legal) {
    while (n > 0 && DigitVal(ch) < base) {
      ch = Next();
      --n;
    }
    if (n > 0) {
      Error("illegal numeric escape sequence");
      *legal = false;
      return ch;
    }
    *legal = true;
    return ch;
  }

  void Error(const char* msg) {
    if (err_.empty()) err_ = msg;
  }

  std::string_view input_;
  size_t pos_ = 0;
  size_t ppos_ = 0;
  bool value_ = false;
  std::string err_;
};

// filters/quote.go unquote: Go string literal syntax, with '|' and '/'
// accepted as double quotes.
std::optional<std::string> Unquote(std::string_view s) {
  size_t n = s.size();
  if (n < 2) return std::nullopt;
  char quote = s[0];
  if (quote != s[n - 1]) return std::nullopt;
  s = s.substr(1, n - 2);
  if (quote != '"' && quote != '\'' && quote != '|' && quote != '/') return std::nullopt;
  if (s.find('\n') != std::string_view::npos) return std::nullopt;
  if (s.find('\\') == std::string_view::npos && s.find(quote) == std::string_view::npos &&
      quote != '\'') {
    return std::string(s);
  }
  std::string out;
  while (!s.empty()) {
    auto c = static_cast<uint8_t>(s[0]);
    if (c == static_cast<uint8_t>(quote)) return std::nullopt;
    if (c >= 0x80) {
      auto [r, w] = DecodeRune(s);
      out.append(s.substr(0, w));
      s.remove_prefix(w);
    } else if (c != '\\') {
      out.push_back(static_cast<char>(c));
      s.remove_prefix(1);
    } else {
      if (s.size() <= 1) return std::nullopt;
      char e = s[1];
      s.remove_prefix(2);
      switch (e) {
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
        case 'u':
        case 'U': {
          size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (s.size() < digits) return std::nullopt;
          int32_t v = 0;
          for (size_t j = 0; j < digits; ++j) {
            int d = DigitVal(static_cast<uint8_t>(s[j]));
            if (d >= 16) return std::nullopt;
            v = (v << 4) | d;
          }
          s.remove_prefix(digits);
          if (e == 'x') {
            out.push_back(static_cast<char>(v));  // a single byte, maybe not UTF-8
          } else {
            if (v > kMaxRune) return std::nullopt;
            EncodeRune(v, &out);
          }
          break;
        }
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7': {
          int32_t v = e - '0';
          if (s.size() < 2) return std::nullopt;
          for (int j = 0; j < 2; ++j) {
            int32_t x = s[j] - '0';
            if (x < 0 || x > 7) return std::nullopt;
            v = (v << 3) | x;
          }
          s.remove_prefix(2);
          if (v > 255) return std::nullopt;
          out.push_back(static_cast<char>(v));
          break;
        }
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
        case '"':
        case '|':
        case '/':
          if (e != quote) return std::nullopt;
          out.push_back(e);
          break;
        default:
          return std::nullopt;
      }
    }
    if (quote == '\'' && !s.empty()) return std::nullopt;
  }
  return out;
}

enum class Operator { kPresent, kEqual, kNotEqual, kMatches };

struct Selector {
  std::vector<std::string> fieldpath;
  Operator op = Operator::kPresent;
  std::string value;
  std::shared_ptr<RE2> re;  // kMatches; null when the pattern did not compile
};

using Conjunction = std::vector<Selector>;

class Parser {
 public:
  explicit Parser(std::string_view input) : input_(input), scanner_(input) {}

  Result<Conjunction> Parse() {
    Conjunction all;
    auto first = ParseSelector();
    if (!first.ok()) return first.status();
    all.push_back(std::move(*first));
    for (;;) {
      int32_t tok = scanner_.Peek();
      if (tok == ',') {
        auto sep = scanner_.Scan();
        if (sep.token != kTokenSeparator) return Err(sep.pos, "expected a separator");
        auto next = ParseSelector();
        if (!next.ok()) return next.status();
        all.push_back(std::move(*next));
      } else if (tok == kTokenEof) {
        break;
      } else {
        std::string shown;
        if (tok >= 0) EncodeRune(tok, &shown);
        return Err(scanner_.ppos(), StrCat("unexpected input: ", shown));
      }
    }
    return all;
  }

 private:
  Result<Selector> ParseSelector() {
    Selector sel;
    auto path = ParseFieldpath();
    if (!path.ok()) return path.status();
    sel.fieldpath = std::move(*path);
    int32_t next = scanner_.Peek();
    if (next == ',' || next == kTokenEof) return sel;
    auto op = scanner_.Scan();
    if (op.token == kTokenOperator) {
      if (op.text == "==") {
        sel.op = Operator::kEqual;
      } else if (op.text == "!=") {
        sel.op = Operator::kNotEqual;
      } else if (op.text == "~=") {
        sel.op = Operator::kMatches;
      } else {
        return Err(op.pos, StrCat("unsupported operator \"", op.text, "\""));
      }
    } else if (op.token == kTokenIllegal) {
      return Err(op.pos, scanner_.error());
    } else {
      return Err(op.pos, "expected an operator (\"==\"|\"!=\"|\"~=\")");
    }
    auto value = scanner_.Scan();
    if (value.token == kTokenValue || value.token == kTokenField) {
      sel.value = std::string(value.text);
    } else if (value.token == kTokenQuoted) {
      auto uq = UnquoteAt(value.pos, value.text, sel.op == Operator::kMatches);
      if (!uq.ok()) return uq.status();
      sel.value = std::move(*uq);
    } else if (value.token == kTokenIllegal) {
      return Err(value.pos, scanner_.error());
    } else {
      return Err(value.pos, "expected value or quoted");
    }
    if (sel.op == Operator::kMatches) {
      RE2::Options options;
      options.set_log_errors(false);
      auto re = std::make_shared<RE2>(sel.value, options);
      if (re->ok()) {
        sel.re = std::move(re);
      } else {
        // containerd logs the error and the selector never matches.
        EVS_LOG(kWarning) << "filter regular expression does not compile; it matches nothing"
                          << Kv("filter", input_) << Kv("error", re->error());
      }
    }
    return sel;
  }

  Result<std::vector<std::string>> ParseFieldpath() {
    std::vector<std::string> path;
    auto first = ParseField();
    if (!first.ok()) return first.status();
    path.push_back(std::move(*first));
    while (scanner_.Peek() == '.') {
      auto sep = scanner_.Scan();
      if (sep.token != kTokenSeparator) return Err(sep.pos, "expected a field separator (`.`)");
      auto f = ParseField();
      if (!f.ok()) return f.status();
      path.push_back(std::move(*f));
    }
    return path;
  }

  Result<std::string> ParseField() {
    auto t = scanner_.Scan();
    if (t.token == kTokenField) return std::string(t.text);
    if (t.token == kTokenQuoted) return UnquoteAt(t.pos, t.text, false);
    if (t.token == kTokenIllegal) return Err(t.pos, scanner_.error());
    return Err(t.pos, "expected field or quoted");
  }

  Result<std::string> UnquoteAt(size_t pos, std::string_view text, bool allow_alt_quotes) {
    if (!allow_alt_quotes && text[0] != '\'' && text[0] != '"') {
      return Err(pos, "invalid quote encountered");
    }
    auto uq = Unquote(text);
    if (!uq) return Err(pos, "unquoting failed: quote syntax error");
    return *uq;
  }

  Status Err(size_t pos, std::string_view msg) {
    return InvalidArgumentError("filter \"", input_, "\": parse error at byte ", pos, ": ", msg);
  }

  std::string_view input_;
  Scanner scanner_;
};

// snapshots/storage/bolt.go adaptSnapshot.
std::optional<std::string> Field(const Info& info, const std::vector<std::string>& path) {
  if (path.empty()) return std::nullopt;
  const std::string& head = path[0];
  if (head == "kind") {
    switch (info.kind) {
      case Kind::kActive:
      case Kind::kView:
      case Kind::kCommitted:
        return std::string(KindName(info.kind));
      default:
        return std::nullopt;
    }
  }
  if (head == "name") return info.name;
  if (head == "parent") return info.parent;
  if (head == "labels") {
    if (info.labels.empty()) return std::nullopt;
    std::string key;
    for (size_t i = 1; i < path.size(); ++i) {
      if (i > 1) key += '.';
      key += path[i];
    }
    auto it = info.labels.find(key);
    if (it == info.labels.end()) return std::nullopt;
    return it->second;
  }
  return std::nullopt;
}

bool SelectorMatches(const Selector& sel, const Info& info) {
  std::optional<std::string> value = Field(info, sel.fieldpath);
  switch (sel.op) {
    case Operator::kPresent:
      return value.has_value();
    case Operator::kEqual:
      return value.has_value() && *value == sel.value;
    case Operator::kNotEqual:
      return value.value_or("") != sel.value;
    case Operator::kMatches:
      return sel.re != nullptr && RE2::PartialMatch(value.value_or(""), *sel.re);
  }
  return false;
}

}  // namespace

struct SnapshotFilter::Compiled {
  // Any of these conjunctions; empty means match everything.
  std::vector<Conjunction> any;
};

SnapshotFilter::SnapshotFilter(std::unique_ptr<Compiled> compiled)
    : compiled_(std::move(compiled)) {}
SnapshotFilter::SnapshotFilter(SnapshotFilter&&) noexcept = default;
SnapshotFilter& SnapshotFilter::operator=(SnapshotFilter&&) noexcept = default;
SnapshotFilter::~SnapshotFilter() = default;

Result<SnapshotFilter> SnapshotFilter::Parse(const std::vector<std::string>& filters) {
  auto compiled = std::make_unique<Compiled>();
  for (const std::string& text : filters) {
    if (text.empty()) {
      // filters.Parse("") is Always: this alternative matches everything.
      compiled->any.push_back({});
      continue;
    }
    auto conj = Parser(text).Parse();
    if (!conj.ok()) return conj.status();
    compiled->any.push_back(std::move(*conj));
  }
  return SnapshotFilter(std::move(compiled));
}

bool SnapshotFilter::Matches(const Info& info) const {
  if (compiled_->any.empty()) return true;
  for (const Conjunction& conj : compiled_->any) {
    bool all = true;
    for (const Selector& sel : conj) {
      if (!SelectorMatches(sel, info)) {
        all = false;
        break;
      }
    }
    if (all) return true;
  }
  return false;
}

}  // namespace evs::snapshot
