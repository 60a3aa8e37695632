// Text for people at a terminal, as `holdfast ckpt` prints it: aligned
// tables and short numbers, sizes and ages.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace holdfast::launcher {

// Columns separated by two spaces; the last column is free text.
class Table {
 public:
  Table(std::vector<std::string> header, std::vector<bool> right_aligned);
  void Add(std::vector<std::string> row);
  std::string Render(const std::string& indent = "") const;

 private:
  std::vector<bool> right_aligned_;
  std::vector<std::vector<std::string>> rows_;
};

// "%.6g".
std::string FormatG(double v);
// The shortest text that reads back as exactly `v`.
std::string FormatExact(double v);
// 512 -> "512 B", 1536 -> "1.5 KiB", then MiB, GiB, TiB with one decimal.
std::string HumanBytes(uint64_t bytes);
// Seconds in the past -> "12s ago", "3m ago", "2h ago", "5d ago"; negative
// (a clock ahead of this one) -> "in the future".
std::string HumanAge(double seconds);

}  // namespace holdfast::launcher
