// Job ids, lease tokens and retry backoff shared by every backend. Pure logic; thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace penguiflow::queue {

/// A new job id: 26 characters of Crockford base32 (a ULID: 48-bit millisecond time then
/// 80 random bits). Ids sort by creation time; within one process they are strictly
/// increasing even within one millisecond. Thread-safe; never throws.
std::string new_job_id();

/// A new lease token: 32 lowercase hex characters (128 random bits). Thread-safe.
std::string new_lease_token();

/// Exponential backoff: min(base_s * mult^(attempt-1), max_s) for attempt >= 1, then
/// scaled by a factor drawn from [1 - jitter, 1] using `unit_random` in [0, 1).
/// attempt <= 0 gives 0. Pure; the caller supplies the randomness (tests pass fixed values).
double backoff_delay(int attempt, double base_s, double max_s, double mult = 2.0, double jitter = 0.0,
                     double unit_random = 0.0);

}  // namespace penguiflow::queue
