// A fuzz target for ErofsReader: libFuzzer calls LLVMFuzzerTestOneInput with
// candidate images; ReadEverything must return, never crash. Built as a
// libFuzzer binary with Clang (cmake -DCMAKE_CXX_COMPILER=clang++
// -DEVS_FUZZ=ON; then `erofs_reader_fuzz corpus/`), and otherwise as a replay
// tool that runs the target over files given on the command line (a crash
// found elsewhere reproduces here, under ASan with -DEVS_SANITIZE=ON).
#include <cstdint>
#include <cstdio>

#include "evs/common/file.h"
#include "read_everything.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)evs::testing::OpenAndReadEverything(data, size);
  return 0;
}

#ifndef EVS_LIBFUZZER
int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    auto bytes = evs::ReadFileToString(argv[i], size_t{1} << 30);
    if (!bytes.ok()) {
      std::fprintf(stderr, "%s\n", bytes.status().ToString().c_str());
      return 1;
    }
    evs::Status s = evs::testing::OpenAndReadEverything(
        reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size());
    std::printf("%s: %s\n", argv[i], s.ToString().c_str());
  }
  return 0;
}
#endif
