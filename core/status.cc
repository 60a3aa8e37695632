#include "core/status.h"

#include <cerrno>
#include <cstring>

namespace holdfast {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "InvalidArgument";
    case StatusCode::kNotFound:
      return "NotFound";
    case StatusCode::kAlreadyExists:
      return "AlreadyExists";
    case StatusCode::kPermissionDenied:
      return "PermissionDenied";
    case StatusCode::kResourceExhausted:
      return "ResourceExhausted";
    case StatusCode::kFailedPrecondition:
      return "FailedPrecondition";
    case StatusCode::kAborted:
      return "Aborted";
    case StatusCode::kUnavailable:
      return "Unavailable";
    case StatusCode::kDeadlineExceeded:
      return "DeadlineExceeded";
    case StatusCode::kDataLoss:
      return "DataLoss";
    case StatusCode::kInternal:
      return "Internal";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(StatusCodeName(code_)) + ": " + message_;
}

Status Status::WithContext(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, context + ": " + message_);
}

Status ErrnoToStatus(int err, const std::string& what) {
  std::string message = what + ": " + std::strerror(err);
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return Status(StatusCode::kNotFound, message);
    case EEXIST:
      return Status(StatusCode::kAlreadyExists, message);
    case EACCES:
    case EPERM:
    case EROFS:
      return Status(StatusCode::kPermissionDenied, message);
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EFBIG:
      return Status(StatusCode::kResourceExhausted, message);
    case EINVAL:
    case EISDIR:
    case ENAMETOOLONG:
      return Status(StatusCode::kInvalidArgument, message);
    case EAGAIN:
    case EINTR:
      return Status(StatusCode::kUnavailable, message);
    default:
      return Status(StatusCode::kInternal, message);
  }
}

}  // namespace holdfast
