#include "checkpoint/checkpoint.h"

#include <stdexcept>

namespace holdfast {
namespace {

bool IsPathWord(const std::string& word) {
  if (word.empty() || word == "." || word == "..") return false;
  for (char ch : word) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

void Checkpoint::Track(const std::string& path, std::span<float> values) {
  static const char* const kReserved[] = {"params",   "model",  "optimizer",
                                          "counters", "values", "holdfast"};
  for (size_t begin = 0;;) {
    const size_t end = path.find('/', begin);
    const std::string word = path.substr(begin, end == std::string::npos ? end : end - begin);
    if (!IsPathWord(word)) {
      throw std::invalid_argument("cannot track '" + path +
                                  "': a path is [A-Za-z0-9_.-] words joined by '/'");
    }
    if (begin == 0) {
      for (const char* reserved : kReserved) {
        if (word == reserved) {
          throw std::invalid_argument("cannot track '" + path + "': '" + word +
                                      "' is a reserved name");
        }
      }
    }
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  if (!tracked_.emplace(path, values).second) {
    throw std::invalid_argument("cannot track '" + path + "': it is tracked already");
  }
}

std::vector<NamedBlob> Checkpoint::Blobs() {
  std::vector<NamedBlob> blobs = {{"params", model_->store().params()}};
  for (OptimizerSlot& slot : optimizer_->slots()) {
    blobs.push_back({"optimizer/" + slot.name, slot.values});
  }
  for (const auto& [path, values] : tracked_) blobs.push_back({path, values});
  return blobs;
}

}  // namespace holdfast
