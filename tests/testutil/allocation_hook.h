// Replaces the global operator new of ONE test binary (include it from a
// single .cc) to watch allocations, so tests can show that a reader never
// allocates what a damaged file claims:
//   g_largest_allocation  the largest request seen (reset it before a call);
//   g_refused_allocation  a request above kAllocationLimit, which fails with
//                         bad_alloc instead of taking the machine's memory.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace {
constexpr size_t kAllocationLimit = size_t{1} << 30;
std::atomic<size_t> g_largest_allocation{0};
std::atomic<size_t> g_refused_allocation{0};

void* WatchedAlloc(size_t n) {
  size_t seen = g_largest_allocation.load(std::memory_order_relaxed);
  while (n > seen && !g_largest_allocation.compare_exchange_weak(seen, n)) {
  }
  if (n > kAllocationLimit) {
    g_refused_allocation.store(n);
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(size_t n) { return WatchedAlloc(n); }
void* operator new[](size_t n) { return WatchedAlloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
