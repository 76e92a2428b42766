// Helpers of the process-level worker tests (worker_process_test): child processes with
// captured output, bounded polling, free ports, private PostgreSQL / Redis servers.
// Every wait here is a poll on a condition with a hard bound; every child is killed when
// its handle goes away.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace penguiflow::testing {

using namespace std::chrono_literals;

/// A temporary directory, removed (recursively) on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

/// Reads a whole file ("" when missing).
std::string read_file(const std::string& path);
/// The last `max` bytes of a file, for failure messages.
std::string tail_file(const std::string& path, std::size_t max = 6000);

/// A child process started with posix_spawn; stdout and stderr go to files. The
/// destructor SIGKILLs a child still running and reaps it.
class Process {
 public:
  /// Starts argv[0] (a path, or a name looked up in PATH) with the current environment
  /// plus `env` (overrides). Output files are created in `dir` named `<label>.out/.err`.
  Process(std::vector<std::string> argv, std::map<std::string, std::string> env, const std::string& dir,
          const std::string& label);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& label() const { return label_; }
  /// True while the child has not exited (reaps it when it has).
  bool running();
  void signal(int sig);
  /// Waits up to `bound` for the exit. Returns the exit code, 128 + signal when killed,
  /// nullopt on timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds bound);
  /// SIGKILL and reap (no-op when already gone).
  void kill_now();
  std::string out() const { return read_file(out_path_); }
  std::string err() const { return read_file(err_path_); }
  /// For failure messages: the command and the tail of stderr / stdout.
  std::string describe() const;

 private:
  std::vector<std::string> argv_;
  std::string label_, out_path_, err_path_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

struct CommandResult {
  int code = -1;  // exit code; 128 + signal; -1: did not finish within its bound
  std::string out, err;
};

/// Runs a command to completion (bounded); output captured.
CommandResult run_command(std::vector<std::string> argv, const std::string& dir,
                          std::chrono::milliseconds bound = 30s, std::map<std::string, std::string> env = {});

/// Polls `pred` every `step` until true or `bound` passes. A throwing predicate counts as
/// false (a server being restarted); the last error is kept in *last_error when given.
bool poll_until(const std::function<bool()>& pred, std::chrono::milliseconds bound,
                std::chrono::milliseconds step = 50ms, std::string* last_error = nullptr);

/// A free TCP port on 127.0.0.1 (bound, read, closed).
int free_port();
/// True when a program is found in PATH.
bool have_program(const std::string& name);
/// Resident set size of a process in KiB (VmRSS of /proc/<pid>/status), -1 if unknown.
long rss_kib(pid_t pid);

/// A PostgreSQL 15 cluster of the test's own (initdb in a temp dir, free port), run as the
/// `postgres` OS user when the test runs as root. Never touches any other server.
class PrivatePostgres {
 public:
  PrivatePostgres();  // throws std::runtime_error when it cannot start
  /// With `password` set, clients must give it (scram-sha-256 for every connection).
  explicit PrivatePostgres(std::string password);
  ~PrivatePostgres();
  std::string url() const;  // with the password, when there is one
  /// The URL with another password (empty: none).
  std::string url_with_password(const std::string& password) const;
  /// Immediate stop (as a crash would) then start again on the same port and data.
  void restart();
  void stop();
  void start();
  std::string log() const;

 private:
  std::vector<std::string> as_postgres(std::vector<std::string> argv) const;
  TempDir dir_;
  int port_ = 0;
  bool running_ = false;
  std::string password_;
};

/// A redis-server of the test's own with AOF and appendfsync always (an acknowledged write
/// survives a kill -9 of the server).
class PrivateRedis {
 public:
  PrivateRedis();
  ~PrivateRedis();
  std::string url() const;
  /// kill -9, then start again on the same port and data directory.
  void restart();
  void start();
  void kill();

 private:
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<Process> server_;
  int generation_ = 0;
};

}  // namespace penguiflow::testing
