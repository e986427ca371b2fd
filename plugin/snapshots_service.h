// The gRPC service containerd.services.snapshots.v1.Snapshots over a
// snapshot::Snapshotter: message conversion only, no semantics of its own.
// Errors are mapped by grpc_status.h. Every call is logged at debug level
// with its duration; failures other than the expected NotFound and
// AlreadyExists are logged at info.
#pragma once

#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "evs/snapshot/snapshotter.h"
#include "metrics.h"

namespace evs::plugin {

namespace snapshotsv1 = ::containerd::services::snapshots::v1;

class SnapshotsService final : public snapshotsv1::Snapshots::Service {
 public:
  // `snapshotter` and `metrics` (optional) are not owned and must outlive
  // the service.
  explicit SnapshotsService(snapshot::Snapshotter* snapshotter, CallMetrics* metrics = nullptr)
      : sn_(snapshotter), metrics_(metrics) {}

  grpc::Status Prepare(grpc::ServerContext* ctx, const snapshotsv1::PrepareSnapshotRequest* req,
                       snapshotsv1::PrepareSnapshotResponse* resp) override;
  grpc::Status View(grpc::ServerContext* ctx, const snapshotsv1::ViewSnapshotRequest* req,
                    snapshotsv1::ViewSnapshotResponse* resp) override;
  grpc::Status Mounts(grpc::ServerContext* ctx, const snapshotsv1::MountsRequest* req,
                      snapshotsv1::MountsResponse* resp) override;
  grpc::Status Commit(grpc::ServerContext* ctx, const snapshotsv1::CommitSnapshotRequest* req,
                      google::protobuf::Empty* resp) override;
  grpc::Status Remove(grpc::ServerContext* ctx, const snapshotsv1::RemoveSnapshotRequest* req,
                      google::protobuf::Empty* resp) override;
  grpc::Status Stat(grpc::ServerContext* ctx, const snapshotsv1::StatSnapshotRequest* req,
                    snapshotsv1::StatSnapshotResponse* resp) override;
  grpc::Status Update(grpc::ServerContext* ctx, const snapshotsv1::UpdateSnapshotRequest* req,
                      snapshotsv1::UpdateSnapshotResponse* resp) override;
  grpc::Status List(grpc::ServerContext* ctx, const snapshotsv1::ListSnapshotsRequest* req,
                    grpc::ServerWriter<snapshotsv1::ListSnapshotsResponse>* writer) override;
  grpc::Status Usage(grpc::ServerContext* ctx, const snapshotsv1::UsageRequest* req,
                     snapshotsv1::UsageResponse* resp) override;
  grpc::Status Cleanup(grpc::ServerContext* ctx, const snapshotsv1::CleanupRequest* req,
                       google::protobuf::Empty* resp) override;

 private:
  snapshot::Snapshotter* sn_;
  CallMetrics* metrics_;
};

}  // namespace evs::plugin
