#include "evs/snapshot/mounts.h"

namespace evs::snapshot {

std::vector<Mount> BuildMounts(const MountState& s) {
  if (s.lowers.empty()) {
    return {Mount{"bind", s.fs_dir, {s.kind == Kind::kView ? "ro" : "rw", "rbind"}}};
  }
  if (s.kind == Kind::kView && s.lowers.size() == 1) {
    return {Mount{"bind", s.lowers[0], {"ro", "rbind"}}};
  }
  std::vector<std::string> options;
  if (s.overlay_index_off) options.push_back("index=off");
  if (s.kind == Kind::kActive) {
    options.push_back("workdir=" + s.work_dir);
    options.push_back("upperdir=" + s.fs_dir);
  }
  std::string lowerdir = "lowerdir=";
  for (size_t i = 0; i < s.lowers.size(); ++i) {
    if (i > 0) lowerdir += ':';
    lowerdir += s.lowers[i];
  }
  options.push_back(std::move(lowerdir));
  if (s.kind == Kind::kView) options.push_back("ro");
  return {Mount{"overlay", "overlay", std::move(options)}};
}

}  // namespace evs::snapshot
