// Running another program (credential helpers, test oracles) without a shell.
#pragma once

#include <string>
#include <vector>

#include "evs/common/status.h"

namespace evs {

struct SubprocessResult {
  int exit_code = -1;   // -1 when killed by a signal
  int signal = 0;
  std::string stdout_data;
  std::string stderr_data;
};

// Runs argv[0] (looked up in PATH) with `stdin_data` on its stdin, collecting
// stdout and stderr (each capped at `max_output` bytes). Fails only if the
// program cannot be started or the timeout (0 = none) passes; a non-zero exit
// is reported in the result, not as an error.
Result<SubprocessResult> RunSubprocess(const std::vector<std::string>& argv,
                                       const std::string& stdin_data = "",
                                       int timeout_ms = 0, size_t max_output = 16u << 20);

}  // namespace evs
