// A real `samplerd` child process for end-to-end tests.
//
// Starts the binary with `--listen 127.0.0.1:0 --listen unix:/tmp/<unique>.sock --metrics_listen 127.0.0.1:0`
// (the last unless the extra flags set --metrics_listen) plus any extra flags, reads the "samplerd listening on
// <address>" and "samplerd metrics on <address>" lines it prints to learn the ports, and kills the child when the
// object goes away, so a failing assertion never leaves a server behind (the child also dies with the test
// process, through PR_SET_PDEATHSIG).
//
//   std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--max_streams", "2"});
//   ASSERT_NE(server, nullptr);
//   samplerd::client::Client client(server->tcp_target());
//   ...
//   EXPECT_EQ(server->Terminate(), 0);   // SIGTERM, then the exit code
#ifndef SAMPLERD_TESTS_SERVICE_SERVER_PROCESS_H_
#define SAMPLERD_TESTS_SERVICE_SERVER_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace samplerd::testing {

// A TCP connection to "<IPv4>:<port>" whose reads and writes wait at most `timeout`; -1 when it failed.
int ConnectTcp(const std::string& address, std::chrono::seconds timeout);

// Calls ListProfiles at `target` on a connection of its own (not one a channel shares), with 10 s to answer: ""
// when it did, else the status. Whether the server still accepts connections.
std::string ListProfilesOnANewConnection(const std::string& target);

// ServerProcess
class ServerProcess {
 public:
  // Starts `binary` (empty: BuiltBinary()) and waits up to 20 s for its addresses to be printed. Null (with the
  // reason on stderr) when the child did not come up. A non-empty `stderr_path` receives the child's stderr (its
  // log) instead of the test's. A non-empty `command_prefix` runs samplerd under that command (an absolute path),
  // as in {"/usr/bin/setpriv", "--reuid=65534", ...}.
  static std::unique_ptr<ServerProcess> Start(const std::vector<std::string>& extra_args = {},
                                              const std::string& stderr_path = "",
                                              const std::vector<std::string>& command_prefix = {},
                                              const std::string& binary = "");

  // The samplerd this test was built with.
  static const char* BuiltBinary();

  // Runs samplerd with `args` (no --listen added) to completion, for flags that make it exit at once.
  // Returns the exit code (-1 when it could not run; 124 when it was still running after 30 s, and was killed, so
  // that a server that starts where it should not fails the test instead of hanging it) and its stdout and stderr
  // in `*output`.
  static int RunToExit(const std::string& args, std::string* output);

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  // SIGKILLs a child that is still running and removes the socket file.
  ~ServerProcess();

  // "127.0.0.1:<port>" and "unix:/tmp/....sock".
  const std::string& tcp_target() const { return tcp_target_; }
  const std::string& unix_target() const { return unix_target_; }
  // "127.0.0.1:<port>" of /metrics; empty when the server runs without metrics.
  const std::string& metrics_address() const { return metrics_address_; }
  pid_t pid() const { return pid_; }
  // A value of the child's /proc/PID/status in KiB ("VmHWM" its peak RSS, "VmRSS", "RssShmem"); -1 when absent.
  int64_t StatusKiB(const std::string& key) const;

  // Sends `signal` (0 = none, only wait) and waits up to `timeout` for the exit. Returns the exit code, 128 + signal
  // number when a signal ended it, or -1 when it is still running after `timeout` (it is then killed).
  int Stop(int signal, std::chrono::milliseconds timeout);
  int Terminate() { return Stop(15 /* SIGTERM */, std::chrono::seconds(30)); }

 private:
  ServerProcess() = default;

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string socket_path_;
  std::string tcp_target_;
  std::string unix_target_;
  std::string metrics_address_;
};

// `word` quoted for /bin/sh (in single quotes, each ' as '\''): the binaries and files of a command that a test
// runs through the shell live under the checkout, whose path may hold spaces.
std::string ShellQuote(const std::string& word);

// How a command run by RunCommand ended and what it printed.
struct CommandResult {
  int exit_code = -1;  // -1: ended by a signal, or could not run
  std::string out;     // stdout alone: what --json consumers parse (gRPC may log to stderr)
  std::string output;  // stdout, then stderr
};

// Runs `binary` (quoted) followed by `args` (shell words, as typed after it) through /bin/sh, to completion.
//
//   CommandResult r = RunCommand(SAMPLERCTL_BINARY, "profiles --json --target " + target);
CommandResult RunCommand(const std::string& binary, const std::string& args);

}  // namespace samplerd::testing

#endif  // SAMPLERD_TESTS_SERVICE_SERVER_PROCESS_H_
