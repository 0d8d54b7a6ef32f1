#include "tests/service/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <utility>

#include "grpcpp/grpcpp.h"
#include "samplerd/v1/sampler.grpc.pb.h"

#ifndef SAMPLERD_BINARY
#error "SAMPLERD_BINARY must name the samplerd executable ($<TARGET_FILE:samplerd>)"
#endif

namespace samplerd::testing {

int ConnectTcp(const std::string& address, std::chrono::seconds timeout) {
  const size_t colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  if (inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr) != 1) return -1;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const timeval tv{static_cast<time_t>(timeout.count()), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}
std::string ListProfilesOnANewConnection(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = v1::Sampler::NewStub(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ListProfilesResponse profiles;
  const grpc::Status status = stub->ListProfiles(&context, v1::ListProfilesRequest(), &profiles);
  return status.ok() ? std::string() : std::to_string(status.error_code()) + " " + status.error_message();
}

namespace {

constexpr char kListening[] = "samplerd listening on ";
constexpr char kMetrics[] = "samplerd metrics on ";

std::string UniqueSocketPath() {
  static std::atomic<int> counter{0};
  return "/tmp/samplerd-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + ".sock";
}

// Reads one '\n'-terminated line from `fd`, waiting until `deadline`. False on EOF or timeout.
bool ReadLine(int fd, std::chrono::steady_clock::time_point deadline, std::string* line) {
  line->clear();
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    char c;
    const ssize_t n = read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if (c == '\n') return true;
    line->push_back(c);
  }
}

}  // namespace

std::unique_ptr<ServerProcess> ServerProcess::Start(const std::vector<std::string>& extra_args,
                                                    const std::string& stderr_path,
                                                    const std::vector<std::string>& command_prefix,
                                                    const std::string& binary) {
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  server->socket_path_ = UniqueSocketPath();
  const std::string unix_address = "unix:" + server->socket_path_;

  const std::string program = binary.empty() ? std::string(SAMPLERD_BINARY) : binary;
  std::vector<std::string> args = {program, "--listen", "127.0.0.1:0", "--listen", unix_address};
  // Quiet unless the caller asks for a level.
  if (std::find(extra_args.begin(), extra_args.end(), "--log_level") == extra_args.end()) {
    args.insert(args.end(), {"--log_level", "warn"});
  }
  // Never the default 0.0.0.0:9464: tests run servers side by side.
  bool wants_metrics = true;
  const auto metrics_flag = std::find(extra_args.begin(), extra_args.end(), "--metrics_listen");
  if (std::find(extra_args.begin(), extra_args.end(), "--metrics_port") != extra_args.end()) {
    // The caller's port, on every interface.
  } else if (metrics_flag == extra_args.end()) {
    args.insert(args.end(), {"--metrics_listen", "127.0.0.1:0"});
  } else {
    wants_metrics = std::next(metrics_flag) != extra_args.end() && !std::next(metrics_flag)->empty();
  }
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  args.insert(args.begin(), command_prefix.begin(), command_prefix.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    std::perror("pipe2");
    return nullptr;
  }
  int err = -1;
  if (!stderr_path.empty()) {
    err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (err < 0) std::perror(stderr_path.c_str());
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    close(out[0]);
    close(out[1]);
    if (err >= 0) close(err);
    return nullptr;
  }
  if (pid == 0) {
    // Only async-signal-safe calls until exec: the test process has gRPC threads.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(out[1], STDOUT_FILENO);  // dup2 clears O_CLOEXEC on the new descriptor
    if (err >= 0) dup2(err, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  if (err >= 0) close(err);
  server->pid_ = pid;
  server->stdout_fd_ = out[0];

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::string line;
  while (server->tcp_target_.empty() || server->unix_target_.empty() ||
         (wants_metrics && server->metrics_address_.empty())) {
    if (!ReadLine(server->stdout_fd_, deadline, &line)) {
      std::fprintf(
          stderr, "ServerProcess: %s did not print its addresses (got tcp=\"%s\" unix=\"%s\" metrics=\"%s\")\n",
          program.c_str(), server->tcp_target_.c_str(), server->unix_target_.c_str(), server->metrics_address_.c_str());
      return nullptr;  // the destructor kills the child
    }
    if (line.rfind(kMetrics, 0) == 0) {
      server->metrics_address_ = line.substr(sizeof(kMetrics) - 1);
      continue;
    }
    if (line.rfind(kListening, 0) != 0) continue;
    const std::string address = line.substr(sizeof(kListening) - 1);
    if (address.rfind("unix:", 0) == 0) {
      server->unix_target_ = address;
    } else {
      server->tcp_target_ = address;
    }
  }
  return server;
}

const char* ServerProcess::BuiltBinary() { return SAMPLERD_BINARY; }

int ServerProcess::RunToExit(const std::string& args, std::string* output) {
  CommandResult result = RunCommand("timeout", "30 " + ShellQuote(SAMPLERD_BINARY) + " " + args);
  *output = std::move(result.output);
  return result.exit_code;
}

int ServerProcess::Stop(int signal, std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (r < 0 || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
  return -1;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
  if (!socket_path_.empty()) unlink(socket_path_.c_str());
}

std::string ShellQuote(const std::string& word) {
  std::string quoted = "'";
  for (const char c : word) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

CommandResult RunCommand(const std::string& binary, const std::string& args) {
  CommandResult result;
  char err_path[] = "/tmp/samplerd-test-stderr-XXXXXX";
  const int err_fd = mkstemp(err_path);
  if (err_fd < 0) return result;
  close(err_fd);
  FILE* pipe = popen((ShellQuote(binary) + " " + args + " 2>" + ShellQuote(err_path)).c_str(), "r");
  if (pipe != nullptr) {
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.out.append(buffer, n);
    const int status = pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.output = result.out;
    if (FILE* err = std::fopen(err_path, "r")) {
      while ((n = fread(buffer, 1, sizeof(buffer), err)) > 0) result.output.append(buffer, n);
      std::fclose(err);
    }
  }
  unlink(err_path);
  return result;
}

int64_t ServerProcess::StatusKiB(const std::string& key) const {
  std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1));
  }
  return -1;
}

}  // namespace samplerd::testing
