#include "commands.h"

namespace evs::cli {

void AddImageCommands(CLI::App& app, Status* status) {
  (void)app;
  (void)status;
}

}  // namespace evs::cli
