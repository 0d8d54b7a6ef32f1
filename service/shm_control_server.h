// ShmControlServer: the shared-memory control socket (`--shm_socket PATH`), where clients hand samplerd their
// memfds and may run steps. The protocol is samplerd.v1.ShmControlRequest / ShmControlResponse (sampler.proto),
// one serialized message per SOCK_SEQPACKET packet; a `register` packet carries its memfd as SCM_RIGHTS
// ancillary data. docs/shm.md walks through it.
//
// Each authenticated connection is one ShmRegistry session: its token comes back in every response, the client sends
// it as `samplerd-shm-session` metadata on its Sample calls, and when the connection closes (the client exited,
// crashed or closed it) the session and its regions leave the registry. A `sample` packet is a SampleRequest run
// by SamplerService::StartRequest, the function every Sample stream's request goes through, with the connection
// as the stream (its seeds, its session, one --max_streams slot): so its checks, limits, metrics, errors and
// draws are the gRPC path's, minus the gRPC round trip. With --auth_token_file a connection gets its session,
// and so registers regions and runs steps, only once it has presented an accepted bearer token (the
// `authorization` field), so the socket is no way around the token; the token is checked again against the
// tokens in force at each `register` and `sample`, so one removed by a reload stops working at once.
//
// Unauthenticated connections (with --auth_token_file, until their token) hold no session, so they take no
// --shm_max_clients slot from clients that have the token. They are bounded instead: each gets kAuthenticateWithin
// to present its token, and past Options::max_unauthenticated of them a new one closes the oldest. Why evict
// rather than refuse the newcomer: a client sends its token with its first packet, so it is unauthenticated for
// one round trip; to shut it out, a peer without the token would have to open max_unauthenticated connections
// within that round trip, whereas refusing newcomers would let it keep every client out by holding the pool full
// (max_unauthenticated connections per kAuthenticateWithin).
//
// One thread accepts; each connection is served by its own thread, one packet at a time (so one request in
// flight per connection, answers in order, and a slow or silent peer holds only its own thread). A lone step
// runs on that thread when a worker is idle (WorkerPool::TryRunHere), as on gRPC's, so an answer costs core's
// time plus two packets. A peer may send requests before reading the answers to earlier ones; one that does not
// read its answers for kAnswerSendTimeout while they fill the socket is disconnected; one that disconnects
// mid-step costs nothing more than the step (the answer goes nowhere, the regions stay mapped until the step ends).
//
//   ShmControlServer::Options options;
//   options.path = "/run/samplerd/shm.sock";
//   options.registry = registry;      // the ShmRegistry the service resolves references in
//   options.service = service.get();  // must outlive the ShmControlServer
//   absl::StatusOr<std::unique_ptr<ShmControlServer>> server = ShmControlServer::Start(std::move(options));
//   ...
//   // on SIGTERM: service->StopAdmitting(); server->WaitUntilIdle(deadline);
//   server->reset();   // stops accepting, ends every connection (a step in flight first), removes the socket file
#ifndef SAMPLERD_SERVICE_SHM_CONTROL_SERVER_H_
#define SAMPLERD_SERVICE_SHM_CONTROL_SERVER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "samplerd/v1/sampler.pb.h"
#include "service/auth.h"
#include "service/sampler_service.h"
#include "service/seed_table.h"
#include "service/shm_registry.h"

namespace samplerd {

class ShmControlServer {
 public:
  // The largest packet either way: a request of a few hundred referenced steps, or their answers. It fits the
  // default unix socket send buffer (net.core.wmem_default), so neither side needs to raise it.
  static constexpr size_t kMaxPacketBytes = 128 << 10;
  // Descriptors of their clients that the connections hold at once, over all of them: one packet's worth, as many
  // as SCM_RIGHTS carries in one message (SCM_MAX_FD, unix(7)). Every descriptor a packet carries is taken, since
  // the kernel closes those past the receive buffer itself, on the receiving thread, where samplerd could not make
  // their close safe; past the first, each is closed at once.
  static constexpr int kMaxDescriptorsReceived = 253;

  // How long an answer waits for the client to read earlier ones when the socket's buffer is full of them (a
  // client that pipelines requests), before the client is taken for one that does not read and disconnected.
  // Its connection's thread waits meanwhile; it holds nobody else's.
  static constexpr std::chrono::milliseconds kAnswerSendTimeout{3000};

  // With --auth_token_file, how long a new connection has to present an accepted token (clients send it with
  // their first packet) before it is answered UNAUTHENTICATED and closed.
  static constexpr std::chrono::milliseconds kAuthenticateWithin{3000};
  // How often an idle authenticated connection's token is checked against the tokens in force: once a reload has
  // removed it, the connection has kAuthenticateWithin to present an accepted one, or it is closed and its session
  // (its --shm_max_clients slot and its regions) goes.
  static constexpr std::chrono::milliseconds kTokenRecheckInterval{1000};

  struct Options {
    // Where to listen; a stale socket file there is replaced.
    std::string path;
    // The regions `register` adds and steps reference; required.
    std::shared_ptr<ShmRegistry> registry;
    // Runs `sample` requests; required, must outlive the ShmControlServer.
    SamplerService* service = nullptr;
    // --auth_token_file's tokens; null = no authentication.
    std::shared_ptr<const BearerTokens> tokens;
    // --max_message_bytes: a `sample` packet or its answer larger than this is RESOURCE_EXHAUSTED, as a gRPC
    // message would be.
    int64_t max_message_bytes = int64_t{64} << 20;
    // --max_steps_per_request: a packet with more steps is refused before it is parsed (CheckRequestWire).
    int64_t max_steps_per_request = 4096;
    // With `tokens`: how many connections may wait to authenticate at once (the file comment); server.cc gives
    // --shm_max_clients, so as many clients as may hold sessions can connect at once without evicting each other.
    int max_unauthenticated = 64;
  };

  // The connections held at once (served, waiting to authenticate, or ended and not yet reaped) with these
  // Options: a connection past them is refused at accept, before it gets a thread. Each holds a descriptor.
  static size_t MaxConnections(int max_clients, int max_unauthenticated);

  // Binds `options.path` and starts serving. INVALID_ARGUMENT for a bad path or a missing registry or service;
  // UNAVAILABLE naming the path when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<ShmControlServer>> Start(Options options);

  ShmControlServer(const ShmControlServer&) = delete;
  ShmControlServer& operator=(const ShmControlServer&) = delete;
  ~ShmControlServer();

  const std::string& path() const { return options_.path; }

  // WaitUntilIdle()
  //
  // For the drain on SIGTERM: true once no connection has a request in flight (a `sample` running or its answer
  // being sent), false when `deadline` came first. Idle connections are not waited for. Once the service stops
  // admitting (SamplerService::StopAdmitting), a request read from then on is answered UNAVAILABLE instead of started,
  // so only the requests already running are waited for.
  bool WaitUntilIdle(std::chrono::system_clock::time_point deadline);

  // Where a connection is in authenticating; Accept may evict it while kPending, its thread claims kAuthenticated
  // (whichever changes it first wins).
  enum class AuthState { kPending, kAuthenticated, kEvicted };

  // What a connection keeps between packets.
  struct ConnectionState {
    std::string session;         // its ShmRegistry session, echoed in every answer; empty until authenticated
    SeedTable seeds;             // the connection is one stream: seed-0 steps of a sequence share one seed
    bool authenticated = false;  // holds a session; true from the start without --auth_token_file
    std::string authorization;   // the last accepted `authorization`, checked again at each register and sample
    bool admitted = false;       // holds a --max_streams slot (from its first `sample` on); released by the caller
    bool close = false;          // the connection is closed once this answer is sent
    bool ran_steps = false;      // this packet's request was admitted and run (HandlePacket sets it)
    std::atomic<AuthState>* auth = nullptr;  // shared with Accept; null: nothing evicts it (the fuzzer)
    v1::ShmControlRequest request;           // parse scratch, kept between packets while small
    int fd = -1;                             // the connection's socket, polled for a hang-up between a request's steps
  };

  // HandlePacket()
  //
  // The answer to one received packet: `length` bytes at `packet` (kMaxPacketBytes + 1 when the packet was
  // longer than that) with the descriptors that came with it in `fds` (-1 for ones the kernel dropped; the caller
  // closes them afterwards). Every decision on a packet's contents is here and none of the socket I/O, so that the
  // fuzzer (tests/fuzz, CheckShmControlBytes) drives the same code as a connection's thread, without a socket.
  static void HandlePacket(const Options& options, ConnectionState* state, const char* packet, size_t length,
                           const std::vector<int>& fds, v1::ShmControlResponse* response);

 private:
  // One accepted connection and the thread serving it.
  struct Connection {
    int fd = -1;          // closed only when the thread is joined, so shutdown() on it never hits a reused number
    std::string session;  // opened at accept without --auth_token_file; otherwise by HandlePacket
    std::thread thread;
    std::atomic<bool> done{false};
    std::atomic<AuthState> auth{AuthState::kPending};
  };

  ShmControlServer(Options options, int listen_fd, int wake_fd);
  void Accept();
  void Serve(Connection* connection);
  // Waits for a packet on an authenticated connection: true when one came (or the peer hung up), false when the
  // token `authorization` was revoked and no packet came within kAuthenticateWithin of that being seen.
  bool AwaitPacketWhileAuthorized(int fd, const std::string& authorization) const;
  // Joins and closes the connections whose thread has ended (all of them when `all`, after shutting them down);
  // returns how many are left.
  size_t Reap(bool all);
  // MaxConnections() of the server's options.
  size_t MaxConnections() const;
  // Evicts the oldest unauthenticated connections while Options::max_unauthenticated or more are open.
  void MakeRoomForAnUnauthenticatedLocked();
  // Count a request from its receipt until its answer is sent when it runs steps, or until it is handled when it
  // does not (WaitUntilIdle).
  void BeginRequest();
  void EndRequest();

  const Options options_;
  const int listen_fd_;
  const int wake_fd_;  // an eventfd: written once to stop Accept
  std::thread accept_thread_;
  std::mutex mu_;
  std::list<std::unique_ptr<Connection>> connections_;  // guarded by mu_
  std::mutex requests_mu_;
  std::condition_variable no_requests_;
  int requests_in_flight_ = 0;  // guarded by requests_mu_
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_SHM_CONTROL_SERVER_H_
