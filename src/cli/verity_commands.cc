#include "commands.h"

namespace evs::cli {

void AddVerityCommands(CLI::App& app, Status* status) {
  (void)app;
  (void)status;
}

}  // namespace evs::cli
