// The table the peer benchmarks in ../shared/bench print, shared by queue_bench and
// worker_bench so their rows line up with the peers'.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace penguiflow::bench {

/// Runs a shell command and returns the last number it printed (NaN when none).
inline double run_probe(const std::string& cmd) {
  if (cmd.empty()) return NAN;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return NAN;
  std::string out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  ::pclose(p);
  std::istringstream in(out);
  double v = NAN;
  for (std::string tok; in >> tok;) try {
      v = std::stod(tok);
    } catch (const std::exception&) {
    }
  return v;
}

/// One measured quantity over the runs.
struct Row {
  std::string metric, variant, unit;
  std::vector<double> values;
};

/// 12345.6 -> "12,346"; small values keep three significant digits.
inline std::string fmt_number(double x) {
  char buf[64];
  if (std::abs(x) >= 100) {
    std::snprintf(buf, sizeof buf, "%.0f", x);
    std::string s = buf, out;
    int n = 0;
    for (auto it = s.rbegin(); it != s.rend(); ++it) {
      if (n && n % 3 == 0 && std::isdigit(static_cast<unsigned char>(*it))) out.insert(out.begin(), ',');
      out.insert(out.begin(), *it);
      ++n;
    }
    return out;
  }
  std::snprintf(buf, sizeof buf, "%.3g", x);
  return buf;
}

/// | peer | metric | variant | median | min – max | unit | runs |
inline void print_table(const std::string& peer, const std::vector<Row>& rows) {
  std::cout << "\n| peer | metric | variant | median | min – max | unit | runs |\n|---|---|---|---:|---:|---|---:|\n";
  for (auto& r : rows) {
    auto v = r.values;
    std::sort(v.begin(), v.end());
    double med = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    std::cout << "| " << peer << " | " << r.metric << " | " << r.variant << " | " << fmt_number(med) << " | "
              << fmt_number(v.front()) << " – " << fmt_number(v.back()) << " | " << r.unit << " | " << v.size() << " |\n";
  }
}

}  // namespace penguiflow::bench
