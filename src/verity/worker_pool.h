// A fixed set of threads that run the parts of one job alongside the caller:
// Run(parts, fn) calls fn(0) on the calling thread and fn(1..parts-1) on the
// workers, and returns when all have finished. The tree builder and the
// whole-image verifier use it to hash level 0 on every core (issue 3:
// "level 0 hashing uses both cores when the input is large"). A job costs
// two condition-variable hand-offs per worker (microseconds: a wake-up
// each), so callers only split work of a megabyte or more. Run() is not
// reentrant: one job at a time.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace evs::verity {

class WorkerPool {
 public:
  // Starts `threads - 1` workers (none when threads ≤ 1).
  explicit WorkerPool(int threads);
  ~WorkerPool();  // stops and joins the workers
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Number of parts a job can be split into (workers + the caller).
  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Runs fn(i) for i in [0, parts), parts ≤ size(); fn(0) on this thread.
  void Run(int parts, const std::function<void(int)>& fn);

  // Threads to use when the caller says 0: one per online CPU, at most 8.
  static int DefaultThreads();

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  int job_parts_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stopping_ = false;
};

}  // namespace evs::verity
