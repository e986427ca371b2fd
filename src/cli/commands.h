// The `evs` command line. Each area registers its subcommands on the app;
// a subcommand's callback stores its outcome in *status, which main() prints
// (the message names the input) and turns into the exit code.
#pragma once

#include <CLI/CLI.hpp>

#include "evs/common/status.h"

namespace evs::cli {

void AddLayerCommands(CLI::App& app, Status* status);   // evs layer …
void AddVerityCommands(CLI::App& app, Status* status);  // evs verity …
void AddImageCommands(CLI::App& app, Status* status);   // evs image …
// evs image convert (convert_commands.cc): adds `convert` under the `image`
// subcommand AddImageCommands created.
void AddConvertCommands(CLI::App& app, Status* status);

}  // namespace evs::cli
