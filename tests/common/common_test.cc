#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include <gtest/gtest.h>

#include "evs/common/byte_stream.h"
#include "evs/common/digest.h"
#include "evs/common/file.h"
#include "evs/common/log.h"
#include "evs/common/mount.h"
#include "evs/common/status.h"
#include "evs/common/subprocess.h"
#include "test_util.h"

namespace evs {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgumentError("odd input ", x);
  return x / 2;
}

Status Quarter(int x, int* out) {
  EVS_ASSIGN_OR_RETURN(int h, Half(x));
  EVS_ASSIGN_OR_RETURN(*out, Half(h));
  return OkStatus();
}

TEST(Status, CarriesCodeAndMessageThroughMacros) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  Status s = Quarter(6, &out);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_EQ(s.message(), "odd input 3");
  EXPECT_EQ(s.Annotate("layer x").message(), "layer x: odd input 3");
  EXPECT_EQ(ErrnoError(ENOENT, "open /nope").code(), Code::kNotFound);
}

TEST(Digest, KnownSha256AndSha512) {
  EXPECT_EQ(Digest::Sha256Of("abc").ToString(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Digest::Of(HashAlgorithm::kSha512, "abc").hex().substr(0, 16), "ddaf35a193617aba");
}

TEST(Digest, StreamingEqualsOneShotAndCloneKeepsState) {
  Hasher h(HashAlgorithm::kSha256);
  h.Update("a");
  Hasher copy = h.Clone();
  h.Update("bc");
  EXPECT_EQ(Digest(HashAlgorithm::kSha256, h.FinishBytes()), Digest::Sha256Of("abc"));
  EXPECT_EQ(Digest(HashAlgorithm::kSha256, copy.FinishBytes()), Digest::Sha256Of("a"));
}

TEST(Digest, ParseRejectsMalformedText) {
  EXPECT_TRUE(Digest::Parse("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad").ok());
  EXPECT_FALSE(Digest::Parse("sha256:BA7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad").ok());
  EXPECT_FALSE(Digest::Parse("sha256:abc").ok());
  EXPECT_FALSE(Digest::Parse("md5:d41d8cd98f00b204e9800998ecf8427e").ok());
  EXPECT_FALSE(Digest::Parse("nocolon").ok());
  auto bad = Digest::Parse("sha1:zz");
  EXPECT_NE(bad.status().message().find("sha1:zz"), std::string::npos);
}

TEST(AtomicFile, CommitRenamesAndAbandonLeavesNothing) {
  testing::TempDir dir;
  std::string path = dir.Join("out");
  {
    auto f = AtomicFile::Create(path);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f->Write("half").ok());
    EXPECT_NE(::access(f->temp_path().c_str(), F_OK), -1);
  }
  EXPECT_EQ(::access(path.c_str(), F_OK), -1);
  EXPECT_EQ(testing::Sh("ls -A " + dir.path()).stdout_data, "");
  ASSERT_TRUE(WriteFileAtomic(path, "whole").ok());
  EXPECT_EQ(*ReadFileToString(path), "whole");
  auto f = AtomicFile::Create(path);
  ASSERT_TRUE(f->Write("x").ok());
  EXPECT_EQ(f->Commit(/*replace=*/false).code(), Code::kAlreadyExists);
}

TEST(Files, RemoveTreeAndDiskUsage) {
  testing::TempDir dir;
  testing::WriteFile(dir.Join("t/a/b/c"), std::string(10000, 'x'));
  testing::WriteFile(dir.Join("t/d"), "y");
  ASSERT_EQ(::link(dir.Join("t/d").c_str(), dir.Join("t/a/e").c_str()), 0);
  auto usage = MeasureDiskUsage(dir.Join("t"));
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->inodes, 5);  // t, a, b, c, d(=e)
  EXPECT_GE(usage->bytes, 10000);
  ASSERT_TRUE(RemoveTree(dir.Join("t")).ok());
  EXPECT_EQ(::access(dir.Join("t").c_str(), F_OK), -1);
  EXPECT_TRUE(RemoveTree(dir.Join("missing")).ok());
}

TEST(Files, RemoveTreeRefusesToCrossMountPoints) {
  EVS_REQUIRE_ROOT();
  testing::TempDir dir;
  testing::WriteFile(dir.Join("t/m/keep"), "");
  testing::WriteFile(dir.Join("src/precious"), "p");
  auto m = MountPoint::Mount(dir.Join("src"), dir.Join("t/m"), "", MS_BIND, "");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(RemoveTree(dir.Join("t")).code(), Code::kFailedPrecondition);
  EXPECT_EQ(::access(dir.Join("src/precious").c_str(), F_OK), 0);
  EXPECT_TRUE(IsMountPoint(dir.Join("t/m")));
  ASSERT_TRUE(m->Unmount().ok());
  EXPECT_FALSE(IsMountPoint(dir.Join("t/m")));
}

TEST(Log, KvQuotesAndEscapesHostileValues) {
  auto render = [](const Kv& kv) {
    std::ostringstream out;
    out << kv;
    return out.str();
  };
  EXPECT_EQ(render(Kv("key", "plain")), " key=plain");
  EXPECT_EQ(render(Kv("key", "two words")), " key=\"two words\"");
  EXPECT_EQ(render(Kv("key", "a\nINFO forged=1")), " key=\"a\\nINFO forged=1\"");
  EXPECT_EQ(render(Kv("key", std::string("\x01\"q\"", 4))), " key=\"\\x01\\\"q\\\"\"");
  EXPECT_EQ(render(Kv("n", 42)), " n=42");
}

TEST(BytePipe, CarriesBytesAndProducerError) {
  BytePipe pipe(7);
  std::thread producer([&] {
    std::string data(1000, 'z');
    EXPECT_TRUE(pipe.Write(data.data(), data.size()).ok());
    pipe.Close(DataLossError("digest mismatch"));
  });
  std::string got;
  char buf[13];
  for (;;) {
    auto n = pipe.Read(buf, sizeof buf);
    if (!n.ok()) {
      EXPECT_EQ(n.status().code(), Code::kDataLoss);
      break;
    }
    ASSERT_GT(*n, 0u);
    got.append(buf, *n);
  }
  producer.join();
  EXPECT_EQ(got, std::string(1000, 'z'));
}

TEST(BytePipe, CancelUnblocksProducer) {
  BytePipe pipe(4);
  std::thread producer([&] {
    std::string data(100, 'z');
    EXPECT_EQ(pipe.Write(data.data(), data.size()).code(), Code::kCancelled);
  });
  char buf[2];
  ASSERT_TRUE(pipe.Read(buf, 2).ok());
  pipe.Cancel(Status(Code::kCancelled, "reader gave up"));
  producer.join();
}

TEST(Subprocess, FeedsStdinAndCollectsOutput) {
  auto r = RunSubprocess({"sh", "-c", "tr a-z A-Z; echo err >&2; exit 3"}, "hello");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stdout_data, "HELLO");
  EXPECT_EQ(r->stderr_data, "err\n");
  EXPECT_EQ(r->exit_code, 3);
  // A child that exits without reading its stdin must not kill us with
  // SIGPIPE (a credential helper that ignores its input, say).
  auto deaf = RunSubprocess({"true"}, std::string(1 << 20, 'x'));
  ASSERT_TRUE(deaf.ok()) << deaf.status().ToString();
  EXPECT_EQ(deaf->exit_code, 0);
  auto slow = RunSubprocess({"sleep", "5"}, "", 100);
  EXPECT_EQ(slow.status().code(), Code::kDeadlineExceeded);
  EXPECT_FALSE(RunSubprocess({"/nonexistent/program"}).ok());
}

TEST(LoopDevice, AttachesReadOnlyAndAutoclears) {
  EVS_REQUIRE_ROOT();
  if (::access("/dev/loop-control", F_OK) != 0) GTEST_SKIP() << "no /dev/loop-control";
  testing::TempDir dir;
  testing::WriteFile(dir.Join("img"), std::string(1 << 20, 'a'));
  std::string path;
  {
    auto loop = LoopDevice::AttachReadOnly(dir.Join("img"));
    ASSERT_TRUE(loop.ok()) << loop.status().ToString();
    path = loop->path();
    std::string ro = testing::ShOk("blockdev --getro " + path);
    EXPECT_EQ(ro, "1\n");
  }
  std::string name = path.substr(5);
  // Autoclear detaches once the last holder closes it.
  std::string backing = testing::Sh("cat /sys/block/" + name + "/loop/backing_file 2>/dev/null").stdout_data;
  EXPECT_EQ(backing.find(dir.Join("img")), std::string::npos);
}

}  // namespace
}  // namespace evs
