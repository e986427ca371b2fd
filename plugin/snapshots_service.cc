#include "snapshots_service.h"

#include <chrono>

#include "evs/common/log.h"
#include "grpc_status.h"

namespace evs::plugin {
namespace {

using snapshot::Info;
using snapshot::Labels;

// Info is sent in batches, as containerd's own service does
// (contrib/snapshotservice/service.go).
constexpr size_t kListBatch = 100;

Labels FromProto(const google::protobuf::Map<std::string, std::string>& in) {
  return Labels(in.begin(), in.end());
}

void ToProto(const std::vector<snapshot::Mount>& mounts,
             google::protobuf::RepeatedPtrField<::containerd::types::Mount>* out) {
  for (const snapshot::Mount& m : mounts) {
    auto* pm = out->Add();
    pm->set_type(m.type);
    pm->set_source(m.source);
    for (const std::string& o : m.options) pm->add_options(o);
  }
}

void ToProto(int64_t ns, google::protobuf::Timestamp* ts) {
  int64_t seconds = ns / 1000000000;
  int64_t nanos = ns % 1000000000;
  if (nanos < 0) {
    nanos += 1000000000;
    --seconds;
  }
  ts->set_seconds(seconds);
  ts->set_nanos(static_cast<int32_t>(nanos));
}

void ToProto(const Info& info, snapshotsv1::Info* out) {
  out->set_name(info.name);
  out->set_parent(info.parent);
  out->set_kind(static_cast<snapshotsv1::Kind>(info.kind));
  ToProto(info.created_ns, out->mutable_created_at());
  ToProto(info.updated_ns, out->mutable_updated_at());
  out->mutable_labels()->insert(info.labels.begin(), info.labels.end());
}

// Logs one call and converts its status.
class CallLog {
 public:
  CallLog(const char* method, const std::string& key, CallMetrics* metrics)
      : method_(method), key_(key), metrics_(metrics), start_(std::chrono::steady_clock::now()) {}
  grpc::Status Done(const Status& status) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - start_)
                  .count();
    if (metrics_ != nullptr) metrics_->Record(method_, status.code(), us / 1e6);
    bool expected =
        status.ok() || status.code() == Code::kNotFound || status.code() == Code::kAlreadyExists;
    if (expected) {
      EVS_LOG(kDebug) << method_ << Kv("key", key_) << Kv("us", us)
                      << Kv("status", CodeName(status.code()));
    } else {
      EVS_LOG(kInfo) << method_ << " failed" << Kv("key", key_) << Kv("us", us)
                     << Kv("error", status.ToString());
    }
    return ToGrpcStatus(status);
  }

 private:
  const char* method_;
  const std::string& key_;
  CallMetrics* metrics_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

grpc::Status SnapshotsService::Prepare(grpc::ServerContext* ctx,
                                       const snapshotsv1::PrepareSnapshotRequest* req,
                                       snapshotsv1::PrepareSnapshotResponse* resp) {
  CallLog log("Prepare", req->key(), metrics_);
  // A Prepare may wait for a layer download; containerd cancelling the pull
  // ends the wait (the conversion goes on for the next pull).
  auto mounts = sn_->Prepare(req->key(), req->parent(), FromProto(req->labels()),
                             [ctx] { return ctx->IsCancelled(); });
  if (!mounts.ok()) return log.Done(mounts.status());
  ToProto(*mounts, resp->mutable_mounts());
  return log.Done(OkStatus());
}

grpc::Status SnapshotsService::View(grpc::ServerContext*,
                                    const snapshotsv1::ViewSnapshotRequest* req,
                                    snapshotsv1::ViewSnapshotResponse* resp) {
  CallLog log("View", req->key(), metrics_);
  auto mounts = sn_->View(req->key(), req->parent(), FromProto(req->labels()));
  if (!mounts.ok()) return log.Done(mounts.status());
  ToProto(*mounts, resp->mutable_mounts());
  return log.Done(OkStatus());
}

grpc::Status SnapshotsService::Mounts(grpc::ServerContext*, const snapshotsv1::MountsRequest* req,
                                      snapshotsv1::MountsResponse* resp) {
  CallLog log("Mounts", req->key(), metrics_);
  auto mounts = sn_->Mounts(req->key());
  if (!mounts.ok()) return log.Done(mounts.status());
  ToProto(*mounts, resp->mutable_mounts());
  return log.Done(OkStatus());
}

grpc::Status SnapshotsService::Commit(grpc::ServerContext*,
                                      const snapshotsv1::CommitSnapshotRequest* req,
                                      google::protobuf::Empty*) {
  CallLog log("Commit", req->key(), metrics_);
  return log.Done(sn_->Commit(req->name(), req->key(), FromProto(req->labels())));
}

grpc::Status SnapshotsService::Remove(grpc::ServerContext*,
                                      const snapshotsv1::RemoveSnapshotRequest* req,
                                      google::protobuf::Empty*) {
  CallLog log("Remove", req->key(), metrics_);
  return log.Done(sn_->Remove(req->key()));
}

grpc::Status SnapshotsService::Stat(grpc::ServerContext*,
                                    const snapshotsv1::StatSnapshotRequest* req,
                                    snapshotsv1::StatSnapshotResponse* resp) {
  CallLog log("Stat", req->key(), metrics_);
  auto info = sn_->Stat(req->key());
  if (!info.ok()) return log.Done(info.status());
  ToProto(*info, resp->mutable_info());
  return log.Done(OkStatus());
}

grpc::Status SnapshotsService::Update(grpc::ServerContext*,
                                      const snapshotsv1::UpdateSnapshotRequest* req,
                                      snapshotsv1::UpdateSnapshotResponse* resp) {
  CallLog log("Update", req->info().name(), metrics_);
  Info info;
  info.name = req->info().name();
  info.labels = FromProto(req->info().labels());
  std::vector<std::string> paths(req->update_mask().paths().begin(),
                                 req->update_mask().paths().end());
  auto updated = sn_->Update(info, paths);
  if (!updated.ok()) return log.Done(updated.status());
  ToProto(*updated, resp->mutable_info());
  return log.Done(OkStatus());
}

grpc::Status SnapshotsService::List(
    grpc::ServerContext* ctx, const snapshotsv1::ListSnapshotsRequest* req,
    grpc::ServerWriter<snapshotsv1::ListSnapshotsResponse>* writer) {
  static const std::string kNoKey;
  CallLog log("List", kNoKey, metrics_);
  std::vector<std::string> filters(req->filters().begin(), req->filters().end());
  auto infos = sn_->List(filters);
  if (!infos.ok()) return log.Done(infos.status());
  snapshotsv1::ListSnapshotsResponse batch;
  for (const Info& info : *infos) {
    ToProto(info, batch.add_info());
    if (static_cast<size_t>(batch.info_size()) >= kListBatch) {
      if (ctx->IsCancelled() || !writer->Write(batch)) {
        return log.Done(Status(Code::kCancelled, "List: client went away"));
      }
      batch.Clear();
    }
  }
  if (batch.info_size() > 0 && !writer->Write(batch)) {
    return log.Done(Status(Code::kCancelled, "List: client went away"));
  }
  return log.Done(OkStatus());
}

grpc::Status SnapshotsService::Usage(grpc::ServerContext*, const snapshotsv1::UsageRequest* req,
                                     snapshotsv1::UsageResponse* resp) {
  CallLog log("Usage", req->key(), metrics_);
  auto usage = sn_->GetUsage(req->key());
  if (!usage.ok()) return log.Done(usage.status());
  resp->set_size(usage->size);
  resp->set_inodes(usage->inodes);
  return log.Done(OkStatus());
}

grpc::Status SnapshotsService::Cleanup(grpc::ServerContext*, const snapshotsv1::CleanupRequest*,
                                       google::protobuf::Empty*) {
  static const std::string kNoKey;
  CallLog log("Cleanup", kNoKey, metrics_);
  return log.Done(sn_->Cleanup());
}

}  // namespace evs::plugin
