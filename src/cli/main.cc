// evs: convert, inspect and verify EROFS layers; pull, push and convert images.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "evs/common/log.h"

int main(int argc, char** argv) {
  CLI::App app{"evs: EROFS layers with dm-verity for containerd (see README.md)", "evs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "evs 0.1.0");
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  evs::Status status;
  evs::cli::AddLayerCommands(app, &status);
  evs::cli::AddVerityCommands(app, &status);
  evs::cli::AddImageCommands(app, &status);
  evs::cli::AddConvertCommands(app, &status);
  app.parse_complete_callback([&] {
    evs::LogLevel level;
    if (evs::ParseLogLevel(log_level, &level)) evs::SetLogLevel(level);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!status.ok()) {
    std::fprintf(stderr, "evs: %s\n", status.message().c_str());
    return 1;
  }
  return 0;
}
