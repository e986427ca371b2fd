#include "commands.h"

namespace evs::cli {

void AddLayerCommands(CLI::App& app, Status* status) {
  (void)app;
  (void)status;
}

}  // namespace evs::cli
