// The PostgreSQL schema of the queue and its migrations (private). Pure; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace penguiflow::queue::pg {

/// True when `name` is usable as the queue's schema: 1-63 of [A-Za-z0-9_-].
bool valid_schema_name(std::string_view name);

/// `name` as a double-quoted SQL identifier.
std::string quote_ident(std::string_view name);

/// The migration scripts, in order: entry i brings the schema from version i to i + 1.
/// `qs` is the quoted schema name. Each script ends by recording its version.
std::vector<std::string> migrations(const std::string& qs);

/// The advisory lock key (pg_advisory_xact_lock) that serializes migrations.
inline constexpr long long kMigrationLockKey = 0x70656e6775696669LL;  // "penguifi"

}  // namespace penguiflow::queue::pg
