// The one place evs Status codes become gRPC status codes. containerd maps
// the gRPC codes back to its errdefs (errdefs/grpc.go FromGRPC):
// InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Unavailable,
// Unimplemented, Canceled and DeadlineExceeded keep their meaning there;
// every other code reaches containerd as an unknown error.
#pragma once

#include <grpcpp/support/status.h>

#include "evs/common/status.h"

namespace evs::plugin {

grpc::StatusCode ToGrpcCode(Code code);
grpc::Status ToGrpcStatus(const Status& status);

}  // namespace evs::plugin
