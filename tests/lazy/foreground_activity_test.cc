// ForegroundActivity shared between processes (lazy/foreground_activity.h):
// the daemon's lazy layers are served by a process each, and a miss in any
// of them must pause every background fetch; background fetches are limited
// per node. Real processes (fork), real flock(2) locks.
#include "evs/lazy/foreground_activity.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "test_util.h"

namespace evs::lazy {
namespace {

using namespace std::chrono_literals;

// A child process that opens the shared activity in `dir`, does `hold`
// (takes a Scope or slots) and then writes one byte to the pipe and waits
// to be killed. The parent reads the byte before it looks.
class Child {
 public:
  template <typename F>
  Child(const std::string& dir, F hold) {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(fds[0]);
      auto a = ForegroundActivity::OpenShared(dir, 2);
      if (!a.ok()) ::_exit(3);
      hold(**a);
      char c = 'x';
      if (::write(fds[1], &c, 1) != 1) ::_exit(4);
      for (;;) ::pause();
    }
    ::close(fds[1]);
    char c = 0;
    EXPECT_EQ(::read(fds[0], &c, 1), 1) << "the child did not get ready";
    ::close(fds[0]);
  }
  ~Child() { Kill(); }
  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

TEST(ForegroundActivity, AloneItTracksThisProcessOnly) {
  ForegroundActivity a;
  EXPECT_FALSE(a.Busy(250ms));
  {
    ForegroundActivity::Scope s(&a);
    EXPECT_TRUE(a.Busy(0ms));
  }
  EXPECT_TRUE(a.Busy(10s)) << "ended just now";
  std::this_thread::sleep_for(30ms);
  EXPECT_FALSE(a.Busy(20ms));
  EXPECT_TRUE(a.TryBackgroundSlot().ok()) << "not limited here";
  ForegroundActivity::Scope none(nullptr);  // no-op
}

TEST(ForegroundActivity, AFetchInAnotherProcessMakesItBusyUntilItDies) {
  evs::testing::TempDir dir;
  auto mine = ForegroundActivity::OpenShared(dir.Join("lazy"), 2);
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  EXPECT_FALSE((*mine)->Busy(0ms));
  {
    Child fetching(dir.Join("lazy"), [](ForegroundActivity& a) {
      new ForegroundActivity::Scope(&a);  // held until the process dies
    });
    EXPECT_TRUE((*mine)->Busy(0ms)) << "a foreground fetch runs in the child";
    fetching.Kill();
  }
  // It died mid-fetch: its lock went with it, and it published no end.
  EXPECT_FALSE((*mine)->Busy(0ms));

  // A fetch that ended in another process a moment ago counts for `quiet`.
  {
    Child ended(dir.Join("lazy"), [](ForegroundActivity& a) { ForegroundActivity::Scope s(&a); });
    EXPECT_TRUE((*mine)->Busy(10s));
    std::this_thread::sleep_for(30ms);
    EXPECT_FALSE((*mine)->Busy(20ms));
  }
}

TEST(ForegroundActivity, BackgroundSlotsArePerNodeAndFreedWhenTheHolderDies) {
  evs::testing::TempDir dir;
  auto mine = ForegroundActivity::OpenShared(dir.Join("lazy"), 2);
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  {
    ForegroundActivity::Slot one = (*mine)->TryBackgroundSlot();
    ASSERT_TRUE(one.ok());
    // The child takes the other one (and would take a third if there were).
    Child holder(dir.Join("lazy"), [](ForegroundActivity& a) {
      auto* s = new ForegroundActivity::Slot(a.TryBackgroundSlot());
      if (!s->ok()) ::_exit(5);
      auto* t = new ForegroundActivity::Slot(a.TryBackgroundSlot());
      if (t->ok()) ::_exit(6);
    });
    EXPECT_FALSE((*mine)->TryBackgroundSlot().ok()) << "both slots are held";
    holder.Kill();
    ForegroundActivity::Slot two = (*mine)->TryBackgroundSlot();
    EXPECT_TRUE(two.ok()) << "the dead holder's slot is free again";
    EXPECT_FALSE((*mine)->TryBackgroundSlot().ok());
  }
  EXPECT_TRUE((*mine)->TryBackgroundSlot().ok()) << "released with the Slot";
  EXPECT_FALSE(ForegroundActivity::OpenShared(dir.Join("lazy"), 0).ok());
}

}  // namespace
}  // namespace evs::lazy
