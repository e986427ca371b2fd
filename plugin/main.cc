// containerd-evs-grpc: serves containerd's snapshots API on a unix socket
// (DESIGN.md §7). containerd reaches it through a proxy_plugins entry; see
// docs/snapshotter.md.
//
// Lifecycle: parse flags and config; open the snapshotter (reconciling the
// root); prepare the socket (refusing a path a live daemon serves, replacing
// a stale one); serve. SIGTERM or SIGINT stops accepting calls, lets
// in-flight calls finish (up to shutdown_timeout_seconds, then cancels
// them), and leaves in place every layer mount a container uses.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <sstream>

#include "config.h"
#include "evs/common/log.h"
#include "evs/snapshot/snapshotter.h"
#include "evs/snapshot/verified_layer_process.h"
#include "listen_socket.h"
#include "metrics.h"
#include "snapshots_service.h"

namespace {

// containerd's default gRPC message limit (defaults.DefaultMaxRecvMsgSize).
constexpr int kMaxMessageBytes = 16 << 20;

// How to start a layer's verifier process: evs-verify-layer from the
// daemon's own directory when it is there (it starts much faster), else the
// daemon itself, which understands the same command.
std::vector<std::string> VerifierCommand() {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string dir(self);
    dir = dir.substr(0, dir.rfind('/'));
    std::string verifier = dir + "/evs-verify-layer";
    if (::access(verifier.c_str(), X_OK) == 0) return {verifier};
  }
  return {"/proc/self/exe"};
}

// The snapshotter's figures in Prometheus text format.
std::string RenderSnapshotterMetrics(evs::snapshot::Snapshotter* sn) {
  auto stats = sn->GetStats();
  if (!stats.ok()) return "";
  std::ostringstream out;
  out << "# HELP evs_snapshots Snapshots by kind.\n# TYPE evs_snapshots gauge\n"
      << "evs_snapshots{kind=\"active\"} " << stats->active << "\n"
      << "evs_snapshots{kind=\"view\"} " << stats->views << "\n"
      << "evs_snapshots{kind=\"committed\"} " << stats->committed << "\n"
      << "# HELP evs_layers Layer images stored (identical layers once).\n"
      << "# TYPE evs_layers gauge\nevs_layers " << stats->layers << "\n"
      << "# HELP evs_layer_bytes Allocated bytes of the stored layer images.\n"
      << "# TYPE evs_layer_bytes gauge\nevs_layer_bytes " << stats->layer_bytes << "\n"
      << "# HELP evs_layer_mounts Layers mounted read-only (and verified).\n"
      << "# TYPE evs_layer_mounts gauge\nevs_layer_mounts " << stats->layers_mounted << "\n"
      << "# HELP evs_commits_total Commits since start (upper directory to layer image).\n"
      << "# TYPE evs_commits_total counter\nevs_commits_total " << stats->commits << "\n"
      << "# HELP evs_layers_shared_total Commits whose layer was already stored.\n"
      << "# TYPE evs_layers_shared_total counter\nevs_layers_shared_total " << stats->layers_shared
      << "\n"
      << "# HELP evs_convert_seconds_total Time spent building layer images.\n"
      << "# TYPE evs_convert_seconds_total counter\nevs_convert_seconds_total "
      << stats->convert_seconds << "\n";
  return out.str();
}

int Run(int argc, char** argv) {
  // The daemon re-executes itself to serve each layer in userspace
  // verification mode (evs/snapshot/verified_layer_process.h).
  if (argc > 1 && std::string(argv[1]) == evs::snapshot::kServeVerifiedLayerCommand) {
    auto args =
        evs::snapshot::ParseVerifiedLayerArgv(std::vector<std::string>(argv + 1, argv + argc));
    if (!args.ok()) {
      std::fprintf(stderr, "containerd-evs-grpc: %s\n", args.status().message().c_str());
      return 2;
    }
    return evs::snapshot::ServeVerifiedLayer(*args, 3);
  }

  // Signals are taken by sigwait() in this thread; block them before any
  // other thread (gRPC's) exists so none of those receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A client that goes away mid-write must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);

  int exit_code = -1;
  auto config = evs::plugin::LoadDaemonConfig(argc, argv, &exit_code);
  if (exit_code >= 0) return exit_code;
  if (!config.ok()) {
    std::fprintf(stderr, "containerd-evs-grpc: %s\n", config.status().message().c_str());
    return 2;
  }
  evs::LogLevel level;
  if (evs::ParseLogLevel(config->log_level, &level)) evs::SetLogLevel(level);
  EVS_LOG(kInfo) << "starting containerd-evs-grpc" << evs::Kv("root", config->root)
                 << evs::Kv("address", config->address)
                 << evs::Kv("config", config->config_path.empty() ? "none" : config->config_path)
                 << evs::Kv("verity", evs::snapshot::VerityModeName(config->verity));

  evs::snapshot::SnapshotterOptions options;
  options.root = config->root;
  options.verity = config->verity;
  options.verifier_command = VerifierCommand();
  auto sn = evs::snapshot::Snapshotter::Open(options);
  if (!sn.ok()) {
    EVS_LOG(kError) << "cannot open the snapshotter" << evs::Kv("error", sn.status().ToString());
    return 1;
  }

  evs::Status socket_status = evs::plugin::PrepareSocketPath(config->address);
  if (!socket_status.ok()) {
    EVS_LOG(kError) << "cannot serve" << evs::Kv("error", socket_status.ToString());
    return 1;
  }

  evs::plugin::CallMetrics call_metrics;
  std::unique_ptr<evs::plugin::MetricsServer> metrics_server;
  if (!config->metrics_address.empty()) {
    evs::snapshot::Snapshotter* snapshotter = sn->get();
    auto started = evs::plugin::MetricsServer::Start(config->metrics_address, [&, snapshotter] {
      return call_metrics.Render() + RenderSnapshotterMetrics(snapshotter);
    });
    if (!started.ok()) {
      EVS_LOG(kError) << "cannot serve metrics" << evs::Kv("error", started.status().ToString());
      return 1;
    }
    metrics_server = std::move(*started);
    EVS_LOG(kInfo) << "metrics" << evs::Kv("url", "http://" + config->metrics_address + "/metrics");
  }
  evs::plugin::SnapshotsService service(sn->get(), &call_metrics);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + config->address, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  // The socket is created by gRPC; a umask makes it 0660 from its first
  // moment, so no client ever sees it more open than that.
  mode_t old_umask = ::umask(0117);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(old_umask);
  if (!server) {
    EVS_LOG(kError) << "cannot listen" << evs::Kv("address", config->address);
    return 1;
  }
  if (::chmod(config->address.c_str(), 0660) != 0) {
    EVS_LOG(kWarning) << "chmod 0660 failed" << evs::Kv("address", config->address);
  }
  EVS_LOG(kInfo) << "serving" << evs::Kv("address", config->address);

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  EVS_LOG(kInfo) << "signal received; stopping" << evs::Kv("signal", strsignal(sig))
                 << evs::Kv("grace_s", config->shutdown_timeout_seconds);
  auto deadline =
      std::chrono::system_clock::now() + std::chrono::seconds(config->shutdown_timeout_seconds);
  // Stops accepting, waits for in-flight calls until the deadline, then
  // cancels what is left.
  server->Shutdown(deadline);
  server->Wait();
  metrics_server.reset();
  EVS_LOG(kDebug) << "no calls in flight";
  evs::Status closed = (*sn)->Close();
  sn->reset();
  if (::unlink(config->address.c_str()) != 0 && errno != ENOENT) {
    EVS_LOG(kWarning) << "cannot remove socket" << evs::Kv("address", config->address);
  }
  EVS_LOG(kInfo) << "stopped" << evs::Kv("status", closed.ok() ? "OK" : closed.ToString());
  return closed.ok() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
