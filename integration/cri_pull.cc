// cri-pull: one CRI PullImage call (runtime.v1.ImageService), the call the
// kubelet makes, against containerd's CRI plugin. For the integration tests
// (Debian 12 has no crictl).
//
//   cri-pull --address /run/containerd/containerd.sock IMAGE [--user U:P]
//
// Prints the image reference containerd returns (its image ID); exits 1
// with the gRPC error otherwise.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "runtime/v1/api.grpc.pb.h"

int main(int argc, char** argv) {
  std::string address, image, user;
  int timeout_s = 600;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--address" && i + 1 < argc) {
      address = argv[++i];
    } else if (a == "--user" && i + 1 < argc) {
      user = argv[++i];
    } else if (a == "--timeout" && i + 1 < argc) {
      timeout_s = std::stoi(argv[++i]);
    } else if (image.empty() && !a.empty() && a[0] != '-') {
      image = a;
    } else {
      image.clear();
      break;
    }
  }
  if (address.empty() || image.empty()) {
    std::fprintf(stderr,
                 "usage: cri-pull --address SOCKET IMAGE [--user USER:PASSWORD] "
                 "[--timeout SECONDS]\n");
    return 2;
  }
  auto channel = grpc::CreateChannel("unix:" + address, grpc::InsecureChannelCredentials());
  auto stub = runtime::v1::ImageService::NewStub(channel);
  runtime::v1::PullImageRequest req;
  req.mutable_image()->set_image(image);
  if (!user.empty()) {
    size_t colon = user.find(':');
    req.mutable_auth()->set_username(user.substr(0, colon));
    if (colon != std::string::npos) req.mutable_auth()->set_password(user.substr(colon + 1));
  }
  runtime::v1::PullImageResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  grpc::Status s = stub->PullImage(&ctx, req, &resp);
  if (!s.ok()) {
    std::fprintf(stderr, "cri-pull: PullImage %s: %s\n", image.c_str(), s.error_message().c_str());
    return 1;
  }
  std::printf("%s\n", resp.image_ref().c_str());
  return 0;
}
