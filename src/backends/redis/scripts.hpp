// The Lua scripts that make every job transition atomic in Redis (Q2). Loaded once per
// server with SCRIPT LOAD and called with EVALSHA (reloaded on NOSCRIPT). Every script
// takes the same KEYS (all under the queue's hash tag, so Redis Cluster keeps them in one
// slot) and ARGV[1] = the job-key prefix "{<namespace>}:job:". docs/wire-format.md
// describes the keys.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace penguiflow::queue::redis {

enum class Script { enqueue, fetch, settle, admin, settle_batch };
inline constexpr std::size_t kScriptCount = 5;

/// The Lua text of a script (prelude included).
const std::string& script_text(Script s);
std::string_view script_name(Script s);

/// Every key of the queue `ns`; all share the hash tag "{ns}".
struct QueueKeys {
  explicit QueueKeys(const std::string& ns);
  std::string ready, scheduled, leased, done, dead, idem, counts, wake, seq, leases, succeeded;  // script KEYS, in order
  std::string effects;                                                         // W7 hash
  std::string layout;  // the layout version of the queue's keys (kRedisLayoutVersion)
  std::string job_prefix;                                                      // + id = job hash
  std::vector<std::string> script_keys() const;
  std::string job(std::string_view id) const { return job_prefix + std::string(id); }
};

/// Byte offset of the job id inside a member of the ready sorted set
/// ("<run_at ms, 15 digits>:<seq, 16 digits>:<id>").
inline constexpr std::size_t kReadyMemberIdOffset = 33;

}  // namespace penguiflow::queue::redis
