#include "distribute/communicator.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/check.h"

namespace holdfast {
namespace {

template <typename T>
void ReduceTyped(T* acc, const T* in, size_t count, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      for (size_t i = 0; i < count; ++i) acc[i] += in[i];
      break;
    case ReduceOp::kMax:
      for (size_t i = 0; i < count; ++i) acc[i] = std::max(acc[i], in[i]);
      break;
    case ReduceOp::kMin:
      for (size_t i = 0; i < count; ++i) acc[i] = std::min(acc[i], in[i]);
      break;
  }
}

}  // namespace

size_t DataTypeSize(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return 4;
    case DataType::kFloat64:
      return 8;
    case DataType::kInt64:
      return 8;
  }
  return 0;
}

void ReduceInto(void* acc, const void* in, size_t count, DataType type, ReduceOp op) {
  switch (type) {
    case DataType::kFloat32:
      ReduceTyped(static_cast<float*>(acc), static_cast<const float*>(in), count, op);
      break;
    case DataType::kFloat64:
      ReduceTyped(static_cast<double*>(acc), static_cast<const double*>(in), count, op);
      break;
    case DataType::kInt64:
      ReduceTyped(static_cast<int64_t*>(acc), static_cast<const int64_t*>(in), count, op);
      break;
  }
}

Communicator::MinMax Communicator::AllReduceMinMax(std::span<const int64_t> values) {
  const size_t n = values.size();
  std::vector<int64_t> words(2 * n);
  for (size_t i = 0; i < n; ++i) {
    words[i] = values[i];
    words[n + i] = ~values[i];
  }
  AllReduceMax(words);
  MinMax out;
  out.max.assign(words.begin(), words.begin() + static_cast<int64_t>(n));
  for (size_t i = 0; i < n; ++i) out.min.push_back(~words[n + i]);
  return out;
}

void EndJob(Communicator& comm, int exit_code, const std::string& program,
            const std::string& what) {
  comm.Abort(exit_code, comm.size() > 1
                            ? program + ": rank " + std::to_string(comm.rank()) + ": " + what
                            : program + ": " + what);
  std::_Exit(exit_code);  // not reached: GCC does not carry [[noreturn]] through a virtual call
}

namespace {

// A Status carried across ranks as text: "<code number>|<message>".
std::string EncodeStatus(const Status& s) {
  return std::to_string(static_cast<int>(s.code())) + "|" + s.message();
}
Status DecodeStatus(const std::string& text) {
  const size_t bar = text.find('|');
  return Status(static_cast<StatusCode>(std::stoi(text.substr(0, bar))), text.substr(bar + 1));
}

}  // namespace

Status Communicator::BroadcastStatus(const Status& s, int root) {
  return DecodeStatus(BroadcastString(rank() == root ? EncodeStatus(s) : std::string(), root));
}

std::vector<Status> Communicator::GatherStatus(const Status& s, int root) {
  std::vector<Status> out;
  for (const std::string& text : Gather(EncodeStatus(s), root)) out.push_back(DecodeStatus(text));
  return out;
}

std::vector<Communicator::Part> Communicator::Consecutive(std::span<const size_t> offsets) {
  std::vector<Part> parts;
  for (size_t r = 0; r + 1 < offsets.size(); ++r) {
    parts.push_back({offsets[r], offsets[r + 1] - offsets[r]});
  }
  return parts;
}

void Communicator::AllGather(void* data, std::span<const Part> parts) {
  HOLDFAST_CHECK(parts.size() == static_cast<size_t>(size()), "AllGather needs a part per rank");
  for (int r = 0; r < size(); ++r) {
    Broadcast(static_cast<char*>(data) + parts[r].at, parts[r].bytes, r);
  }
}

std::string Communicator::BroadcastString(const std::string& s, int root) {
  int64_t length = rank() == root ? static_cast<int64_t>(s.size()) : 0;
  Broadcast(&length, sizeof length, root);
  std::string out = rank() == root ? s : std::string(static_cast<size_t>(length), '\0');
  Broadcast(out.data(), out.size(), root);
  return out;
}

void LocalCommunicator::Abort(int exit_code, const std::string& why) {
  std::fprintf(stderr, "%s\n", why.c_str());
  std::fflush(nullptr);
  std::_Exit(exit_code);
}

}  // namespace holdfast
