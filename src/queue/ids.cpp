#include <penguiflow/queue/ids.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <mutex>
#include <random>

namespace penguiflow::queue {
namespace {

std::uint64_t random_u64() {
  thread_local std::mt19937_64 rng = [] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }();
  return rng();
}

constexpr char kCrockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

}  // namespace

std::string new_job_id() {
  // Monotonic ULID: within one millisecond the 80-bit random part is incremented, so ids
  // from one process are strictly increasing (FIFO by id is meaningful).
  static std::mutex mu;
  static std::uint64_t last_ms = 0;
  static std::uint64_t rand_hi = 0;  // 16 bits used
  static std::uint64_t rand_lo = 0;  // 64 bits
  std::uint64_t ms, hi, lo;
  {
    auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    std::lock_guard lock(mu);
    ms = static_cast<std::uint64_t>(now);
    if (ms <= last_ms) {
      ms = last_ms;
      if (++rand_lo == 0) rand_hi = (rand_hi + 1) & 0xffff;
    } else {
      last_ms = ms;
      rand_hi = random_u64() & 0x7fff;  // top bit clear: room to increment
      rand_lo = random_u64();
    }
    hi = rand_hi;
    lo = rand_lo;
  }
  // 128 bits: 48 time | 16 hi | 64 lo, written as 26 base32 digits (130 bits, top 2 zero).
  std::array<char, 26> out{};
  unsigned __int128 v = (static_cast<unsigned __int128>(ms & 0xffffffffffffULL) << 80) |
                        (static_cast<unsigned __int128>(hi) << 64) | lo;
  for (int i = 25; i >= 0; --i) {
    out[i] = kCrockford[static_cast<unsigned>(v & 31)];
    v >>= 5;
  }
  return std::string(out.begin(), out.end());
}

std::string new_lease_token() {
  static constexpr char hex[] = "0123456789abcdef";
  std::string s(32, '0');
  for (int part = 0; part < 2; ++part) {
    auto r = random_u64();
    for (int i = 0; i < 16; ++i) s[part * 16 + i] = hex[(r >> (i * 4)) & 15];
  }
  return s;
}

double backoff_delay(int attempt, double base_s, double max_s, double mult, double jitter, double unit_random) {
  if (attempt <= 0 || base_s <= 0) return 0;
  double d = base_s * std::pow(mult, attempt - 1);
  if (!std::isfinite(d) || d > max_s) d = max_s;
  jitter = std::clamp(jitter, 0.0, 1.0);
  unit_random = std::clamp(unit_random, 0.0, 1.0);
  return d * (1.0 - jitter * unit_random);
}

}  // namespace penguiflow::queue
