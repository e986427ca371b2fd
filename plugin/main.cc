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
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <thread>

#include "config.h"
#include "evs/common/log.h"
#include "evs/lazy/lazy_layer_process.h"
#include "evs/registry/client.h"
#include "evs/registry/credentials.h"
#include "evs/snapshot/registry_layer_source.h"
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
std::string RenderSnapshotterMetrics(evs::snapshot::Snapshotter* sn,
                                     const evs::snapshot::RegistryLayerSource* source) {
  auto stats = sn->GetStats();
  if (!stats.ok()) return "";
  std::ostringstream out;
  out << "# HELP evs_remote_prepares_total Prepares of pulled layers, by whether evs "
         "provided the layer or containerd unpacked it.\n"
      << "# TYPE evs_remote_prepares_total counter\n"
      << "evs_remote_prepares_total{result=\"committed\"} " << stats->remote_committed << "\n"
      << "evs_remote_prepares_total{result=\"fallback\"} " << stats->remote_fallbacks << "\n";
  if (source != nullptr) {
    auto c = source->stats();
    out << "# HELP evs_pull_conversions_total Layers downloaded and converted on pull.\n"
        << "# TYPE evs_pull_conversions_total counter\n"
        << "evs_pull_conversions_total{result=\"ok\"} " << c.converted << "\n"
        << "evs_pull_conversions_total{result=\"failed\"} " << c.failed << "\n"
        << "evs_pull_conversions_total{result=\"expired\"} " << c.expired << "\n"
        << "# HELP evs_pull_conversions_joined_total Requests served by a conversion already "
           "under way or done ahead.\n"
        << "# TYPE evs_pull_conversions_joined_total counter\n"
        << "evs_pull_conversions_joined_total " << c.joined << "\n"
        << "# HELP evs_pull_bytes_total Layer blob bytes downloaded by conversions.\n"
        << "# TYPE evs_pull_bytes_total counter\nevs_pull_bytes_total " << c.blob_bytes << "\n"
        << "# HELP evs_pull_convert_seconds_total Wall time of conversions on pull.\n"
        << "# TYPE evs_pull_convert_seconds_total counter\nevs_pull_convert_seconds_total "
        << c.convert_seconds << "\n"
        << "# HELP evs_pull_conversions Conversions running and queued now.\n"
        << "# TYPE evs_pull_conversions gauge\n"
        << "evs_pull_conversions{state=\"running\"} " << c.running << "\n"
        << "evs_pull_conversions{state=\"queued\"} " << c.queued << "\n";
  }
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
  // … and each lazy layer (evs/lazy/lazy_layer_process.h).
  if (argc > 1 && std::string(argv[1]) == evs::lazy::kServeLazyLayerCommand) {
    auto args = evs::lazy::ParseLazyLayerArgv(std::vector<std::string>(argv + 1, argv + argc));
    if (!args.ok()) {
      std::fprintf(stderr, "containerd-evs-grpc: %s\n", args.status().message().c_str());
      return 2;
    }
    return evs::lazy::ServeLazyLayer(*args, 3);
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

  // Convert-on-pull (DESIGN.md §1): one registry client for the daemon,
  // credentials from the Docker config, mirrors and TLS from hosts.toml.
  std::unique_ptr<evs::registry::RegistryClient> registry;
  std::unique_ptr<evs::snapshot::RegistryLayerSource> source;
  if (config->convert_on_pull) {
    auto credentials = evs::registry::DockerConfigCredentials::Load(config->docker_config);
    if (!credentials.ok()) {
      EVS_LOG(kError) << "cannot read registry credentials"
                      << evs::Kv("error", credentials.status().ToString());
      return 1;
    }
    evs::registry::RegistryOptions ro;
    ro.hosts_dir = config->registry_config_path;
    ro.credentials = std::move(*credentials);
    ro.user_agent = "containerd-evs-grpc/0.1.0";
    auto client = evs::registry::RegistryClient::Create(std::move(ro));
    if (!client.ok()) {
      EVS_LOG(kError) << "cannot create the registry client"
                      << evs::Kv("error", client.status().ToString());
      return 1;
    }
    registry = std::move(*client);
    evs::snapshot::RegistryLayerSourceOptions so;
    so.client = registry.get();
    so.max_concurrent = config->max_concurrent_conversions;
    so.convert_ahead = config->convert_ahead;
    so.compute_diff_id = config->verify_diff_id;
    so.max_tar_bytes = static_cast<uint64_t>(config->max_layer_bytes);
    so.keep_unclaimed = std::chrono::seconds(config->keep_unclaimed_seconds);
    auto created = evs::snapshot::RegistryLayerSource::Create(so);
    if (!created.ok()) {
      EVS_LOG(kError) << "cannot start convert-on-pull"
                      << evs::Kv("error", created.status().ToString());
      return 1;
    }
    source = std::move(*created);
    EVS_LOG(kInfo) << "convert-on-pull on"
                   << evs::Kv("registry_config_path", config->registry_config_path.empty()
                                                          ? "none"
                                                          : config->registry_config_path)
                   << evs::Kv("conversions", config->max_concurrent_conversions)
                   << evs::Kv("ahead", config->convert_ahead)
                   << evs::Kv("verify_diff_id", config->verify_diff_id);
  }

  evs::snapshot::SnapshotterOptions options;
  options.root = config->root;
  options.verity = config->verity;
  options.verifier_command = VerifierCommand();
  options.remote = source.get();
  options.verify_remote_chain = config->verify_diff_id;
  options.lazy = config->lazy_pull;
  options.lazy_background = config->lazy_background_fetch;
  options.registry_hosts_dir = config->registry_config_path;
  options.docker_config = config->docker_config;
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
    const evs::snapshot::RegistryLayerSource* pulls = source.get();
    auto started =
        evs::plugin::MetricsServer::Start(config->metrics_address, [&, snapshotter, pulls] {
          return call_metrics.Render() + RenderSnapshotterMetrics(snapshotter, pulls);
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
  // cancels what is left. A Prepare waiting for a layer conversion is woken
  // at the deadline by stopping convert-on-pull.
  std::mutex shutdown_mu;
  std::condition_variable shutdown_cv;
  bool calls_done = false;
  std::thread deadline_guard([&] {
    std::unique_lock<std::mutex> lock(shutdown_mu);
    if (!shutdown_cv.wait_until(lock, deadline, [&] { return calls_done; }) && source) {
      EVS_LOG(kInfo) << "grace period over; cancelling layer conversions";
      source->Shutdown();
    }
  });
  server->Shutdown(deadline);
  server->Wait();
  {
    std::lock_guard<std::mutex> lock(shutdown_mu);
    calls_done = true;
  }
  shutdown_cv.notify_all();
  deadline_guard.join();
  metrics_server.reset();
  // Conversions nobody waits for stop; what they staged is deleted.
  if (source) source->Shutdown();
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
