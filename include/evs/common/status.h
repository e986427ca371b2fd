// Errors are values. A Status carries a code and a message that names the
// input it is about ("layer sha256:ab12…: tar entry \"etc/x\": bad checksum at
// offset 1536"); Result<T> is a T or a non-OK Status. No exception crosses a
// module boundary. The daemon maps codes to gRPC status codes in one place
// (plugin/), the CLI prints the message and exits non-zero.
#pragma once

#include <cassert>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace evs {

enum class Code {
  kOk = 0,
  kInvalidArgument,     // the caller's input is malformed (a bad tar, a bad label)
  kNotFound,            // the named thing does not exist
  kAlreadyExists,       // the named thing exists and must not be replaced
  kFailedPrecondition,  // the system is not in a state that allows this
  kUnavailable,         // a remote or transient failure; retrying may succeed
  kDataLoss,            // stored or received data failed verification
  kPermissionDenied,
  kUnauthenticated,
  kDeadlineExceeded,
  kCancelled,
  kResourceExhausted,   // a size or count limit was exceeded
  kOutOfRange,
  kUnimplemented,
  kInternal,            // a bug or an unexpected system error (I/O, syscalls)
};

std::string_view CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "CODE: message", or "OK".
  std::string ToString() const;

  // Returns the same status with "context: " put in front of the message;
  // an OK status stays OK. Use it to name the input as an error travels up.
  Status Annotate(std::string_view context) const;

  bool operator==(const Status& other) const = default;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status OkStatus() { return Status(); }

// Concatenates anything that has an operator<<. Used to build messages.
template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

template <typename... Args>
Status InvalidArgumentError(const Args&... args) {
  return Status(Code::kInvalidArgument, StrCat(args...));
}
template <typename... Args>
Status NotFoundError(const Args&... args) {
  return Status(Code::kNotFound, StrCat(args...));
}
template <typename... Args>
Status AlreadyExistsError(const Args&... args) {
  return Status(Code::kAlreadyExists, StrCat(args...));
}
template <typename... Args>
Status FailedPreconditionError(const Args&... args) {
  return Status(Code::kFailedPrecondition, StrCat(args...));
}
template <typename... Args>
Status UnavailableError(const Args&... args) {
  return Status(Code::kUnavailable, StrCat(args...));
}
template <typename... Args>
Status DataLossError(const Args&... args) {
  return Status(Code::kDataLoss, StrCat(args...));
}
template <typename... Args>
Status ResourceExhaustedError(const Args&... args) {
  return Status(Code::kResourceExhausted, StrCat(args...));
}
template <typename... Args>
Status UnimplementedError(const Args&... args) {
  return Status(Code::kUnimplemented, StrCat(args...));
}
template <typename... Args>
Status InternalError(const Args&... args) {
  return Status(Code::kInternal, StrCat(args...));
}

// An error for a failed system call: "<what>: <strerror(err)>", with a code
// derived from errno (ENOENT → NotFound, EEXIST → AlreadyExists, EACCES/EPERM
// → PermissionDenied, ENOSPC → ResourceExhausted, others → Internal).
Status ErrnoError(int err, std::string_view what);

// Returns the errno a status stands for when it is handed back to the kernel
// (FUSE replies): DataLoss → EIO, NotFound → ENOENT, … defaults to EIO.
int StatusToErrno(const Status& status);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok() && "Result constructed from an OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  // The error, or OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace evs

#define EVS_CONCAT_INNER_(a, b) a##b
#define EVS_CONCAT_(a, b) EVS_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function when it is not OK.
#define EVS_RETURN_IF_ERROR(expr)                 \
  do {                                            \
    ::evs::Status evs_status_ = (expr);           \
    if (!evs_status_.ok()) return evs_status_;    \
  } while (0)

// `lhs = value of expr`, or returns its status from the enclosing function.
#define EVS_ASSIGN_OR_RETURN(lhs, expr) \
  EVS_ASSIGN_OR_RETURN_IMPL_(EVS_CONCAT_(evs_result_, __LINE__), lhs, expr)
#define EVS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
