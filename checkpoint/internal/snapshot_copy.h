// The copy an asynchronous save makes of its state on the training thread
// (checkpoint/async_save.cc): the only part of such a save that training waits
// for, so it is built for speed rather than generality.
#pragma once

#include <cstddef>
#include <cstdint>

namespace holdfast::internal {

// Copies `n` bytes with non-temporal stores, the CPU's widest, where it has
// them. The copy is read next by the writer thread or the disk, not by this
// core: stores that go around the cache neither evict training's working set
// nor read each line of the destination before writing it. The stores are
// fenced before returning, so another thread may read them once it learns
// of the copy.
void StreamingCopy(const std::byte* from, std::byte* to, size_t n);

// StreamingCopy that also returns the XXH3-64 of the bytes. Each 4 KiB is
// hashed right after it is copied, while it is in the first-level cache, so
// the hash adds little to the copy; hashing a whole 64 KiB chunk after
// copying it read the chunk a second time from further away.
uint64_t StreamingCopyAndHash(const std::byte* from, std::byte* to, size_t n);

}  // namespace holdfast::internal
