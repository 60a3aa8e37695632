// Status and StatusOr: recoverable errors as values, with an Abseil-like
// vocabulary that tells the caller what to do about them (see STYLE.md).
#pragma once

#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

namespace holdfast {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // the caller passed something wrong: fix the input
  kNotFound,         // a file or object does not exist
  kAlreadyExists,
  kPermissionDenied,
  kResourceExhausted,   // disk full, out of memory
  kFailedPrecondition,  // the system is not in a state to do this (config mismatch)
  kAborted,             // retry the whole operation (a two-phase commit vote failed)
  kUnavailable,         // transient: retry the call
  kDeadlineExceeded,
  kDataLoss,  // corruption: bytes on disk are not what was written
  kInternal,  // a bug or an unexpected system error
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "DataLoss: shard-0-of-2.bin: hash mismatch" or "OK".
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>".
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgumentError(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFoundError(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status FailedPreconditionError(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status AbortedError(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
inline Status UnavailableError(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DataLossError(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status ResourceExhaustedError(std::string m) {
  return {StatusCode::kResourceExhausted, std::move(m)};
}
inline Status InternalError(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// Maps an errno value from a failed system call on `what` to a Status:
// ENOENT -> NotFound, EACCES/EPERM/EROFS -> PermissionDenied, ENOSPC/EDQUOT -> ResourceExhausted,
// ...
Status ErrnoToStatus(int err, const std::string& what);

// A value or the error that prevented it.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    if (status_.ok())
      status_ = InternalError("StatusOr constructed from an OK status without a value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  // Precondition: ok(). Aborts otherwise, since reading a missing value is a bug.
  T& value() & {
    CheckOk();
    return *value_;
  }
  const T& value() const& {
    CheckOk();
    return *value_;
  }
  T&& value() && {
    CheckOk();
    return std::move(*value_);
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void CheckOk() const {
    if (!value_) std::abort();
  }
  Status status_;
  std::optional<T> value_;
};

}  // namespace holdfast

#define HOLDFAST_CONCAT_INNER_(a, b) a##b
#define HOLDFAST_CONCAT_(a, b) HOLDFAST_CONCAT_INNER_(a, b)

#define HOLDFAST_RETURN_IF_ERROR(expr)       \
  do {                                       \
    ::holdfast::Status _hf_status = (expr);  \
    if (!_hf_status.ok()) return _hf_status; \
  } while (0)

#define HOLDFAST_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(tmp).value()

// HOLDFAST_ASSIGN_OR_RETURN(auto x, MakeX());
#define HOLDFAST_ASSIGN_OR_RETURN(lhs, expr) \
  HOLDFAST_ASSIGN_OR_RETURN_IMPL_(HOLDFAST_CONCAT_(_hf_statusor_, __LINE__), lhs, expr)
