#include "checkpoint/checkpoint.h"

namespace holdfast {

std::vector<NamedBlob> Checkpoint::Blobs() {
  std::vector<NamedBlob> blobs = {{"params", model_->store().params()}};
  for (OptimizerSlot& slot : optimizer_->slots()) {
    blobs.push_back({"optimizer/" + slot.name, slot.values});
  }
  return blobs;
}

}  // namespace holdfast
