// evs image …: look at images in registries, pull them into OCI image
// layouts and push layouts to registries. See docs/registry.md.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "evs/common/byte_stream.h"
#include "evs/common/file.h"
#include "evs/oci/image_layout.h"
#include "evs/oci/media_types.h"
#include "evs/oci/platform.h"
#include "evs/oci/reference.h"
#include "evs/registry/client.h"
#include "evs/registry/image.h"
#include "progress.h"
#include "registry_flags.h"

namespace evs::cli {
namespace {

using Clock = std::chrono::steady_clock;

// The shared registry flags plus how many blobs move at once.
struct RegistryJobFlags : RegistryFlags {
  int jobs = 4;
};

void AddRegistryJobFlags(CLI::App* cmd, RegistryJobFlags* flags) {
  AddRegistryFlags(cmd, flags);
  cmd->add_option("-j,--jobs", flags->jobs, "Blobs transferred at once")->capture_default_str();
}

Result<std::unique_ptr<registry::RegistryClient>> NewClient(const RegistryJobFlags& flags,
                                                            const oci::Reference& ref) {
  return NewRegistryClient(flags, {ref}, flags.jobs + 2);
}

std::string PlatformOf(const oci::Descriptor& d) {
  return d.platform ? oci::Normalize(*d.platform).ToString() : "-";
}

// Per-blob progress lines drawn together on a terminal (one line each,
// redrawn in place at most ten times a second); silent otherwise.
class TransferDisplay {
 public:
  explicit TransferDisplay(std::string verb)
      : verb_(std::move(verb)), enabled_(::isatty(STDERR_FILENO) == 1), start_(Clock::now()) {}
  ~TransferDisplay() { Draw(true); }

  size_t Add(const std::string& label, uint64_t total) {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.push_back({label, total, 0, "waiting"});
    return lines_.size() - 1;
  }
  void Update(size_t i, uint64_t done, const char* state) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      lines_[i].done = done;
      lines_[i].state = state;
    }
    Draw(false);
  }

 private:
  struct Line {
    std::string label;
    uint64_t total, done;
    const char* state;
  };
  void Draw(bool final) {
    if (!enabled_) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto now = Clock::now();
    if (!final && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    std::string out;
    if (drawn_ > 0) out += "\033[" + std::to_string(drawn_) + "A";
    for (const auto& l : lines_) {
      char pct[16] = "";
      if (l.total > 0) {
        std::snprintf(pct, sizeof pct, "%3.0f%%",
                      100.0 * static_cast<double>(l.done) / static_cast<double>(l.total));
      }
      out += "\r\033[K" + l.label + "  " + l.state + "  " + FormatBytes(l.done) + " / " +
             FormatBytes(l.total) + "  " + pct + "\n";
    }
    drawn_ = lines_.size();
    std::fputs(out.c_str(), stderr);
    std::fflush(stderr);
  }

  std::string verb_;
  bool enabled_;
  Clock::time_point start_, last_draw_;
  std::mutex mu_;
  std::vector<Line> lines_;
  size_t drawn_ = 0;
};

// Runs `work(i)` for i in [0, n) on `jobs` threads; returns the first error.
Status RunParallel(size_t n, int jobs, const std::function<Status(size_t)>& work) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status first;
  std::atomic<bool> failed{false};
  auto worker = [&] {
    while (!failed.load()) {
      size_t i = next.fetch_add(1);
      if (i >= n) return;
      Status s = work(i);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first.ok()) first = s;
        failed = true;
      }
    }
  };
  std::vector<std::thread> threads;
  int count = std::max(1, std::min<int>(jobs, static_cast<int>(n)));
  for (int t = 0; t < count; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  return first;
}

// ---------------------------------------------------------------------------
// inspect

struct InspectFlags {
  RegistryJobFlags registry;
  std::string ref;
  std::string platform;
};

Status RunInspect(const InspectFlags& flags) {
  EVS_ASSIGN_OR_RETURN(oci::Reference ref, oci::Reference::Parse(flags.ref));
  EVS_ASSIGN_OR_RETURN(auto client, NewClient(flags.registry, ref));
  oci::Platform platform = oci::HostPlatform();
  if (!flags.platform.empty()) {
    EVS_ASSIGN_OR_RETURN(platform, oci::Platform::Parse(flags.platform));
  }
  EVS_ASSIGN_OR_RETURN(registry::PlatformImage image,
                       registry::FetchPlatformImage(*client, ref, platform));
  std::printf("%s\n", ref.ToString().c_str());
  std::printf("digest:    %s\n", image.top.descriptor.digest.ToString().c_str());
  std::printf("type:      %s (%lld bytes)\n", image.top.descriptor.media_type.c_str(),
              static_cast<long long>(image.top.descriptor.size));
  if (image.index) {
    std::printf("platforms:\n");
    for (const auto& m : image.index->manifests) {
      std::printf("  %-20s %s%s\n", PlatformOf(m).c_str(), m.digest.ToString().c_str(),
                  m.digest == image.manifest.descriptor.digest ? "  (selected)" : "");
    }
    std::printf("manifest:  %s (%s)\n", image.manifest.descriptor.digest.ToString().c_str(),
                image.manifest.descriptor.media_type.c_str());
  }
  std::printf("config:    %s (%s/%s%s%s)\n", image.parsed.config.digest.ToString().c_str(),
              image.config.platform.os.c_str(), image.config.platform.architecture.c_str(),
              image.config.platform.variant.empty() ? "" : "/",
              image.config.platform.variant.c_str());
  std::printf("layers:\n");
  int64_t total = 0;
  for (size_t i = 0; i < image.parsed.layers.size(); ++i) {
    const auto& l = image.parsed.layers[i];
    total += l.size;
    std::printf("  %2zu  %s  %-48s %10s\n", i + 1, l.digest.ToString().c_str(),
                l.media_type.c_str(), FormatBytes(static_cast<uint64_t>(l.size)).c_str());
  }
  std::printf("total:     %s in %zu layers\n", FormatBytes(static_cast<uint64_t>(total)).c_str(),
              image.parsed.layers.size());
  return OkStatus();
}

// ---------------------------------------------------------------------------
// pull

struct PullFlags {
  RegistryJobFlags registry;
  std::string ref;
  std::string layout_dir;
  std::string platform;
  bool all_platforms = false;
};

// Counts bytes into a sink and reports them.
class CountingSink : public ByteSink {
 public:
  CountingSink(ByteSink* inner, TransferDisplay* display, size_t line)
      : inner_(inner), display_(display), line_(line) {}
  Status Write(const void* data, size_t n) override {
    EVS_RETURN_IF_ERROR(inner_->Write(data, n));
    done_ += n;
    display_->Update(line_, done_, "downloading");
    return OkStatus();
  }

 private:
  ByteSink* inner_;
  TransferDisplay* display_;
  size_t line_;
  uint64_t done_ = 0;
};

Status RunPull(const PullFlags& flags) {
  auto start = Clock::now();
  EVS_ASSIGN_OR_RETURN(oci::Reference ref, oci::Reference::Parse(flags.ref));
  EVS_ASSIGN_OR_RETURN(auto client, NewClient(flags.registry, ref));
  EVS_ASSIGN_OR_RETURN(oci::ImageLayout layout, oci::ImageLayout::Create(flags.layout_dir));

  // The documents, fetched and verified first (small); then the blobs.
  EVS_ASSIGN_OR_RETURN(registry::FetchedManifest top, client->FetchManifest(ref));
  oci::Reference pinned = ref.WithDigest(top.descriptor.digest);
  std::vector<registry::FetchedManifest> manifests;  // image manifests to pull
  std::vector<registry::FetchedManifest> documents;  // everything to store
  oci::Descriptor named = top.descriptor;            // what index.json will point at
  if (oci::IsImageIndexMediaType(top.descriptor.media_type)) {
    EVS_ASSIGN_OR_RETURN(oci::ImageIndex index,
                         oci::ImageIndex::Parse(top.bytes, top.descriptor.media_type));
    std::vector<oci::Descriptor> wanted;
    if (flags.all_platforms) {
      for (const auto& d : index.manifests) {
        if (oci::IsImageManifestMediaType(d.media_type)) wanted.push_back(d);
      }
      documents.push_back(top);
    } else {
      oci::Platform platform = oci::HostPlatform();
      if (!flags.platform.empty()) {
        EVS_ASSIGN_OR_RETURN(platform, oci::Platform::Parse(flags.platform));
      }
      auto chosen = index.SelectPlatform(platform);
      if (!chosen.ok()) return chosen.status().Annotate(ref.ToString());
      wanted.push_back(*chosen);
    }
    for (const auto& d : wanted) {
      EVS_ASSIGN_OR_RETURN(registry::FetchedManifest m, client->FetchManifest(pinned, d));
      if (!flags.all_platforms) {
        named = m.descriptor;
        named.platform = d.platform;
      }
      manifests.push_back(m);
      documents.push_back(m);
    }
  } else {
    manifests.push_back(top);
    documents.push_back(top);
  }

  // Blobs: configs and layers, each once.
  std::vector<oci::Descriptor> blobs;
  std::set<Digest> seen;
  for (const auto& m : manifests) {
    EVS_ASSIGN_OR_RETURN(oci::ImageManifest parsed,
                         oci::ImageManifest::Parse(m.bytes, m.descriptor.media_type));
    std::vector<oci::Descriptor> mine = {parsed.config};
    mine.insert(mine.end(), parsed.layers.begin(), parsed.layers.end());
    for (const auto& d : mine) {
      if (seen.insert(d.digest).second) blobs.push_back(d);
    }
  }
  std::atomic<uint64_t> fetched_bytes{0};
  std::atomic<int> fetched{0};
  {
    TransferDisplay display("pull");
    std::vector<size_t> lines;
    for (const auto& b : blobs) {
      lines.push_back(display.Add(
          b.digest.Short() + " " + (oci::IsConfigMediaType(b.media_type) ? "config" : "layer "),
          static_cast<uint64_t>(b.size)));
    }
    EVS_RETURN_IF_ERROR(RunParallel(blobs.size(), flags.registry.jobs, [&](size_t i) -> Status {
      const oci::Descriptor& b = blobs[i];
      if (layout.HasBlob(b.digest, b.size)) {
        display.Update(lines[i], static_cast<uint64_t>(b.size), "exists");
        return OkStatus();
      }
      EVS_ASSIGN_OR_RETURN(AtomicFile file, layout.CreateBlobFile(b.digest));
      FdSink fd_sink(file.fd(), file.temp_path());
      CountingSink sink(&fd_sink, &display, lines[i]);
      // Verified while it streams; only a blob whose digest matched is
      // renamed into place.
      EVS_RETURN_IF_ERROR(client->FetchBlob(pinned, b, &sink));
      EVS_RETURN_IF_ERROR(file.Commit());
      display.Update(lines[i], static_cast<uint64_t>(b.size), "done");
      fetched_bytes += static_cast<uint64_t>(b.size);
      ++fetched;
      return OkStatus();
    }));
  }
  for (const auto& d : documents) {
    EVS_RETURN_IF_ERROR(layout.WriteBlob(d.descriptor.digest, d.bytes));
  }
  EVS_RETURN_IF_ERROR(layout.AddToIndex(named, ref.tag));
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("pulled %s (%s) to %s: %d blobs, %s in %.2f s (%s)\n", ref.ToString().c_str(),
              named.digest.ToString().c_str(), flags.layout_dir.c_str(), fetched.load(),
              FormatBytes(fetched_bytes.load()).c_str(), secs,
              FormatRate(fetched_bytes.load(), secs).c_str());
  return OkStatus();
}

// ---------------------------------------------------------------------------
// push

struct PushFlags {
  RegistryJobFlags registry;
  std::string layout_dir;
  std::string ref;
  std::string name;
  uint64_t chunk_size = 0;
  std::string mount_from;
};

Status RunPush(const PushFlags& flags) {
  auto start = Clock::now();
  EVS_ASSIGN_OR_RETURN(oci::Reference ref, oci::Reference::Parse(flags.ref));
  EVS_ASSIGN_OR_RETURN(oci::ImageLayout layout, oci::ImageLayout::Open(flags.layout_dir));
  EVS_ASSIGN_OR_RETURN(oci::ImageIndex index, layout.ReadIndex());
  // Which entry of index.json: --name, else the only one.
  const oci::Descriptor* entry = nullptr;
  std::string names;
  for (const auto& d : index.manifests) {
    auto it = d.annotations.find(std::string(oci::kAnnotationRefName));
    std::string name = it == d.annotations.end() ? "" : it->second;
    names += (names.empty() ? "" : ", ") + (name.empty() ? d.digest.Short() : name);
    if (!flags.name.empty() && name == flags.name) entry = &d;
  }
  if (flags.name.empty() && index.manifests.size() == 1) entry = &index.manifests[0];
  if (entry == nullptr) {
    return InvalidArgumentError(flags.layout_dir, ": ",
                                flags.name.empty() ? "holds several images; choose one with --name"
                                                   : "no image named \"" + flags.name + "\"",
                                " (it has: ", names.empty() ? "none" : names, ")");
  }
  EVS_ASSIGN_OR_RETURN(auto client, NewClient(flags.registry, ref));

  // Documents bottom-up: image manifests (with their blobs), then the index.
  std::vector<oci::Descriptor> manifests;
  if (oci::IsImageIndexMediaType(entry->media_type)) {
    EVS_ASSIGN_OR_RETURN(std::string bytes, layout.ReadBlob(entry->digest));
    EVS_ASSIGN_OR_RETURN(oci::ImageIndex child, oci::ImageIndex::Parse(bytes, entry->media_type));
    for (const auto& d : child.manifests) {
      if (!oci::IsImageManifestMediaType(d.media_type)) {
        return UnimplementedError(flags.layout_dir, ": index entry ", d.digest.ToString(),
                                  " has media type \"", d.media_type,
                                  "\"; only image manifests are pushed");
      }
      manifests.push_back(d);
    }
  } else if (oci::IsImageManifestMediaType(entry->media_type)) {
    manifests.push_back(*entry);
  } else {
    return InvalidArgumentError(flags.layout_dir, ": entry ", entry->digest.ToString(),
                                " has media type \"", entry->media_type,
                                "\", not a manifest or index");
  }
  std::vector<oci::Descriptor> blobs;
  std::set<Digest> seen;
  for (const auto& m : manifests) {
    EVS_ASSIGN_OR_RETURN(std::string bytes, layout.ReadBlob(m.digest));
    EVS_ASSIGN_OR_RETURN(oci::ImageManifest parsed, oci::ImageManifest::Parse(bytes, m.media_type));
    std::vector<oci::Descriptor> mine = {parsed.config};
    mine.insert(mine.end(), parsed.layers.begin(), parsed.layers.end());
    for (const auto& d : mine) {
      if (seen.insert(d.digest).second) blobs.push_back(d);
    }
  }
  std::atomic<uint64_t> uploaded_bytes{0};
  std::atomic<int> uploaded{0}, skipped{0}, mounted{0};
  {
    TransferDisplay display("push");
    std::vector<size_t> lines;
    for (const auto& b : blobs) {
      lines.push_back(display.Add(b.digest.Short(), static_cast<uint64_t>(b.size)));
    }
    registry::PushBlobOptions options;
    options.chunk_size = flags.chunk_size;
    options.mount_from = flags.mount_from;
    EVS_RETURN_IF_ERROR(RunParallel(blobs.size(), flags.registry.jobs, [&](size_t i) -> Status {
      const oci::Descriptor& b = blobs[i];
      display.Update(lines[i], 0, "pushing");
      EVS_ASSIGN_OR_RETURN(auto content,
                           registry::FileBlobContent::Open(layout.BlobPath(b.digest)));
      EVS_ASSIGN_OR_RETURN(registry::PushOutcome outcome,
                           client->PushBlob(ref, b, content.get(), options));
      switch (outcome) {
        case registry::PushOutcome::kAlreadyExists:
          ++skipped;
          display.Update(lines[i], static_cast<uint64_t>(b.size), "exists");
          break;
        case registry::PushOutcome::kMounted:
          ++mounted;
          display.Update(lines[i], static_cast<uint64_t>(b.size), "mounted");
          break;
        case registry::PushOutcome::kUploaded:
          ++uploaded;
          uploaded_bytes += static_cast<uint64_t>(b.size);
          display.Update(lines[i], static_cast<uint64_t>(b.size), "done");
          break;
      }
      return OkStatus();
    }));
  }
  if (oci::IsImageIndexMediaType(entry->media_type)) {
    for (const auto& m : manifests) {
      EVS_ASSIGN_OR_RETURN(std::string bytes, layout.ReadBlob(m.digest));
      EVS_RETURN_IF_ERROR(
          client->PushManifest(ref.WithTag("").WithDigest(m.digest), m.media_type, bytes).status());
    }
  }
  EVS_ASSIGN_OR_RETURN(std::string top, layout.ReadBlob(entry->digest));
  oci::Reference target = ref;
  if (target.tag.empty() && target.digest.empty()) target.tag = "latest";
  EVS_ASSIGN_OR_RETURN(oci::Descriptor pushed,
                       client->PushManifest(target, entry->media_type, top));
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("pushed %s (%s): %d blobs uploaded (%s), %d mounted, %d already there, %.2f s\n",
              ref.ToString().c_str(), pushed.digest.ToString().c_str(), uploaded.load(),
              FormatBytes(uploaded_bytes.load()).c_str(), mounted.load(), skipped.load(), secs);
  return OkStatus();
}

}  // namespace

void AddImageCommands(CLI::App& app, Status* status) {
  CLI::App* image = app.add_subcommand(
      "image", "Inspect images in registries; pull to and push from OCI layouts");
  image->require_subcommand(1);

  auto inspect = std::make_shared<InspectFlags>();
  CLI::App* inspect_cmd = image->add_subcommand(
      "inspect", "Print an image's digest, platforms and layers (media types and sizes)");
  inspect_cmd->add_option("REF", inspect->ref, "Image reference, e.g. docker.io/library/alpine:3")
      ->required();
  inspect_cmd->add_option("--platform", inspect->platform,
                          "os/arch[/variant] whose layers to list (default: this machine's)");
  AddRegistryJobFlags(inspect_cmd, &inspect->registry);
  inspect_cmd->callback([inspect, status] { *status = RunInspect(*inspect); });

  auto pull = std::make_shared<PullFlags>();
  CLI::App* pull_cmd = image->add_subcommand(
      "pull", "Download an image into an OCI image layout (blobs verified as they stream)");
  pull_cmd->add_option("REF", pull->ref, "Image reference")->required();
  pull_cmd->add_option("--oci-layout", pull->layout_dir, "Directory of the OCI image layout")
      ->required();
  pull_cmd->add_option("--platform", pull->platform,
                       "os/arch[/variant] to pull from an index (default: this machine's)");
  pull_cmd->add_flag("--all-platforms", pull->all_platforms,
                     "Pull every platform and keep the index");
  AddRegistryJobFlags(pull_cmd, &pull->registry);
  pull_cmd->callback([pull, status] { *status = RunPull(*pull); });

  auto push = std::make_shared<PushFlags>();
  CLI::App* push_cmd =
      image->add_subcommand("push", "Upload an image from an OCI image layout to a registry");
  push_cmd->add_option("DIR", push->layout_dir, "OCI image layout")->required();
  push_cmd->add_option("REF", push->ref, "Destination reference, e.g. registry:5000/app:v1")
      ->required();
  push_cmd->add_option("--name", push->name,
                       "Which image of the layout (its org.opencontainers.image.ref.name), "
                       "when it holds several");
  push_cmd->add_option("--chunk-size", push->chunk_size,
                       "Upload in PATCH chunks of this many bytes (default: one PUT per blob)");
  push_cmd->add_option("--mount-from", push->mount_from,
                       "Repository on the same registry to mount blobs from");
  AddRegistryJobFlags(push_cmd, &push->registry);
  push_cmd->callback([push, status] { *status = RunPush(*push); });
}

}  // namespace evs::cli
