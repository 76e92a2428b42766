#include "process_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace penguiflow::testing {

namespace fs = std::filesystem;

TempDir::TempDir(const std::string& prefix) {
  std::string tmpl = (fs::temp_directory_path() / (prefix + "XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string tail_file(const std::string& path, std::size_t max) {
  std::string s = read_file(path);
  if (s.size() > max) s = "..." + s.substr(s.size() - max);
  return s;
}

namespace {

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

}  // namespace

Process::Process(std::vector<std::string> argv, std::map<std::string, std::string> env, const std::string& dir,
                 const std::string& label)
    : argv_(std::move(argv)), label_(label), out_path_(dir + "/" + label + ".out"), err_path_(dir + "/" + label + ".err") {
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos && env.count(kv.substr(0, eq))) continue;
    envs.push_back(std::move(kv));
  }
  for (auto& [k, v] : env) envs.push_back(k + "=" + v);
  std::vector<char*> cargv, cenv;
  for (auto& a : argv_) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  for (auto& e : envs) cenv.push_back(e.data());
  cenv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  // Its own process group: a signal aimed at it never reaches the test.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  int rc = posix_spawnp(&pid_, cargv[0], &fa, &attr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::runtime_error("posix_spawn " + argv_[0] + ": " + std::strerror(rc));
}

Process::~Process() { kill_now(); }

bool Process::running() {
  if (status_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = decode_status(st);
    return false;
  }
  return r == 0;
}

void Process::signal(int sig) {
  if (!status_) ::kill(pid_, sig);
}

std::optional<int> Process::wait_exit(std::chrono::milliseconds bound) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(5ms);
  }
  return status_;
}

void Process::kill_now() {
  if (pid_ <= 0 || status_) return;
  ::kill(pid_, SIGKILL);
  int st = 0;
  if (::waitpid(pid_, &st, 0) == pid_) status_ = decode_status(st);
}

std::string Process::describe() const {
  return "[" + label_ + "] " + join(argv_) + "\n--- stderr (tail) ---\n" + tail_file(err_path_) +
         "\n--- stdout (tail) ---\n" + tail_file(out_path_, 2000);
}

CommandResult run_command(std::vector<std::string> argv, const std::string& dir, std::chrono::milliseconds bound,
                          std::map<std::string, std::string> env) {
  static int counter = 0;
  std::string label = "cmd" + std::to_string(++counter);
  CommandResult r;
  {
    Process p(std::move(argv), std::move(env), dir, label);
    auto code = p.wait_exit(bound);
    r.code = code.value_or(-1);
    r.out = p.out();
    r.err = p.err();
  }
  std::error_code ec;
  fs::remove(dir + "/" + label + ".out", ec);
  fs::remove(dir + "/" + label + ".err", ec);
  return r;
}

bool poll_until(const std::function<bool()>& pred, std::chrono::milliseconds bound, std::chrono::milliseconds step,
                std::string* last_error) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  for (;;) {
    try {
      if (pred()) return true;
    } catch (const std::exception& e) {
      if (last_error) *last_error = e.what();
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(step);
  }
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot bind a free port");
  }
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool have_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/bin:/bin");
  std::string d;
  while (std::getline(ss, d, ':'))
    if (!d.empty() && ::access((d + "/" + name).c_str(), X_OK) == 0) return true;
  return false;
}

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

// ------------------------------------------------------------------ PrivatePostgres

namespace {
constexpr const char* kPgBin = "/usr/lib/postgresql/15/bin";
}

std::vector<std::string> PrivatePostgres::as_postgres(std::vector<std::string> argv) const {
  if (::geteuid() != 0) return argv;
  std::vector<std::string> out{"runuser", "-u", "postgres", "--"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

PrivatePostgres::PrivatePostgres() : PrivatePostgres(std::string()) {}

PrivatePostgres::PrivatePostgres(std::string password) : dir_("pf-proc-pg."), password_(std::move(password)) {
  if (!have_program(std::string(kPgBin) + "/initdb")) throw std::runtime_error(std::string("no ") + kPgBin + "/initdb");
  fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                   fs::perms::others_read | fs::perms::others_exec);
  fs::create_directories(dir_.path() / "pg");
  if (::geteuid() == 0) {
    passwd* pw = ::getpwnam("postgres");
    if (!pw) throw std::runtime_error("running as root and there is no postgres OS user");
    if (::chown((dir_.path() / "pg").c_str(), pw->pw_uid, pw->pw_gid) != 0) throw std::runtime_error("chown failed");
  }
  port_ = free_port();
  std::vector<std::string> initdb{std::string(kPgBin) + "/initdb", "-D", dir_.str("pg/data"), "-U", "postgres",
                                  "--no-sync", "-A"};
  if (password_.empty()) {
    initdb.push_back("trust");
  } else {
    const auto pwfile = dir_.path() / "pwfile";  // read by initdb, as the postgres user
    std::ofstream(pwfile) << password_ << "\n";
    fs::permissions(pwfile, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                                fs::perms::others_read);
    initdb.push_back("scram-sha-256");
    initdb.push_back("--pwfile=" + pwfile.string());
  }
  auto r = run_command(as_postgres(initdb), dir_.path().string(), 60s);
  if (r.code != 0) throw std::runtime_error("initdb failed: " + r.err + r.out);
  start();
}

PrivatePostgres::~PrivatePostgres() { stop(); }

std::string PrivatePostgres::url() const { return url_with_password(password_); }

std::string PrivatePostgres::url_with_password(const std::string& password) const {
  return "postgresql://postgres" + (password.empty() ? std::string() : ":" + password) + "@127.0.0.1:" +
         std::to_string(port_) + "/postgres";
}

void PrivatePostgres::start() {
  std::string opts = "-p " + std::to_string(port_) + " -k " + dir_.str("pg") +
                     " -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100";
  auto r = run_command(as_postgres({std::string(kPgBin) + "/pg_ctl", "-D", dir_.str("pg/data"), "-l", dir_.str("pg/log"),
                                    "-w", "-t", "60", "-o", opts, "start"}),
                       dir_.path().string(), 70s);
  if (r.code != 0) throw std::runtime_error("pg_ctl start failed: " + r.err + r.out + "\n" + log());
  running_ = true;
}

void PrivatePostgres::stop() {
  if (!running_) return;
  run_command(as_postgres({std::string(kPgBin) + "/pg_ctl", "-D", dir_.str("pg/data"), "-m", "immediate", "-w", "stop"}),
              dir_.path().string(), 60s);
  running_ = false;
}

void PrivatePostgres::restart() {
  stop();
  start();
}

std::string PrivatePostgres::log() const { return tail_file(dir_.str("pg/log"), 3000); }

// ------------------------------------------------------------------ PrivateRedis

PrivateRedis::PrivateRedis() : dir_("pf-proc-redis.") {
  if (!have_program("redis-server")) throw std::runtime_error("redis-server is not installed");
  port_ = free_port();
  start();
}

PrivateRedis::~PrivateRedis() { kill(); }

std::string PrivateRedis::url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }

void PrivateRedis::start() {
  std::vector<std::string> argv{"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--dir",
                                dir_.path().string(), "--appendonly", "yes", "--appendfsync", "always", "--save", ""};
  server_ = std::make_unique<Process>(argv, std::map<std::string, std::string>{}, dir_.path().string(),
                                      "redis-server-" + std::to_string(++generation_));
  bool up = poll_until([&] {
    auto r = run_command({"redis-cli", "-p", std::to_string(port_), "ping"}, dir_.path().string(), 5s);
    return r.out.find("PONG") != std::string::npos;
  }, 20s, 50ms);
  if (!up) throw std::runtime_error("private redis-server did not start: " + server_->describe());
}

void PrivateRedis::kill() {
  if (server_) server_->kill_now();
  server_.reset();
}

void PrivateRedis::restart() {
  kill();
  start();
}

}  // namespace penguiflow::testing
