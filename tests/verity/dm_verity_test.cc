// Kernel verification: the dm-verity table (reference §4.3) and the call
// sequence of shared, reference-counted devices, through the DeviceMapper
// interface. The activation test runs only where device-mapper exists (not
// on the development machine; see docs/verity.md for the qemu guest).
#include "evs/verity/dm_verity.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <set>
#include <vector>

#include "evs/common/fd.h"
#include "evs/common/file.h"
#include "evs/common/mount.h"
#include "test_util.h"
#include "verity_test_util.h"

namespace evs::verity {
namespace {

using evs::testing::ReadFileOrDie;
using evs::testing::ShOk;
using evs::testing::TempDir;

// Records the calls and checks, at creation time, what a real kernel would:
// the loop device exists, is read-only, autoclear, and backs the layer file.
class RecordingDeviceMapper : public DeviceMapper {
 public:
  Status CreateReadOnly(const std::string& name, const std::string& uuid, uint64_t length,
                        const std::string& target_type, const std::string& params) override {
    calls.push_back("create " + name);
    if (devices.count(name)) return AlreadyExistsError(name);
    if (fail_create) return InternalError("ioctl DM_TABLE_LOAD failed");
    last_uuid = uuid;
    last_length = length;
    last_type = target_type;
    last_params = params;
    std::string loop = params.substr(2, params.find(' ', 2) - 2);  // after "1 "
    std::string sys = "/sys/block/" + Basename(loop);
    loop_seen = loop;
    loop_ro = evs::testing::Sh("cat " + sys + "/ro").stdout_data;
    loop_autoclear = evs::testing::Sh("cat " + sys + "/loop/autoclear").stdout_data;
    loop_backing = evs::testing::Sh("cat " + sys + "/loop/backing_file").stdout_data;
    devices.insert(name);
    return OkStatus();
  }
  Status Remove(const std::string& name) override {
    calls.push_back("remove " + name);
    if (!devices.erase(name)) return NotFoundError(name);
    return OkStatus();
  }
  Result<bool> Exists(const std::string& name) override { return devices.count(name) > 0; }

  std::vector<std::string> calls;
  std::set<std::string> devices;
  bool fail_create = false;
  std::string last_uuid, last_type, last_params, loop_seen, loop_ro, loop_autoclear, loop_backing;
  uint64_t last_length = 0;
};

#define REQUIRE_LOOP()                                                                  \
  do {                                                                                  \
    EVS_REQUIRE_ROOT();                                                                 \
    if (::access("/dev/loop-control", W_OK) != 0) GTEST_SKIP() << "needs loop devices"; \
  } while (0)

TEST(DmVerityDevices, TwoUsersShareOneDeviceRemovedWithTheLast) {
  REQUIRE_LOOP();
  TempDir dir;
  auto f = testing::MakeFormattedImage(dir.Join("layer"), 300);
  RecordingDeviceMapper dm;
  DmVerityDevices devices(&dm);
  const std::string name = DmVerityDeviceName(f.descriptor.root_digest);

  auto a = devices.Acquire(f.path, f.descriptor);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->path(), "/dev/mapper/" + name);
  // What the kernel was given.
  EXPECT_EQ(dm.last_type, "verity");
  EXPECT_EQ(dm.last_uuid, "EVS-VERITY-" + f.descriptor.root_digest.hex());
  EXPECT_EQ(dm.last_length, 300u * 8);
  auto table = DmVerityTable::ForLayer(f.descriptor, dm.loop_seen);
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(dm.last_params, table->TargetParams());
  EXPECT_NE(dm.last_params.find(" " + SaltHex(f.descriptor.params.salt)), std::string::npos);
  EXPECT_EQ(dm.loop_ro, "1\n");
  EXPECT_EQ(dm.loop_autoclear, "1\n");
  EXPECT_EQ(dm.loop_backing, f.path + "\n");
  // No dm device holds the loop device here, so autoclear has detached it:
  // nothing leaks when the device goes.
  EXPECT_NE(
      evs::testing::Sh("cat /sys/block/" + Basename(dm.loop_seen) + "/loop/backing_file").exit_code,
      0);

  auto b = devices.Acquire(f.path, f.descriptor);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->path(), a->path());
  EXPECT_EQ(devices.users(f.descriptor.root_digest), 2);
  EXPECT_EQ(dm.calls, std::vector<std::string>{"create " + name});

  EXPECT_TRUE(a->Release().ok());
  EXPECT_EQ(dm.calls.size(), 1u);  // still used by b
  EXPECT_EQ(devices.users(f.descriptor.root_digest), 1);
  *b = DmVerityDevice();  // dropping the last share removes the device
  EXPECT_EQ(dm.calls, (std::vector<std::string>{"create " + name, "remove " + name}));
  EXPECT_EQ(devices.users(f.descriptor.root_digest), 0);
  EXPECT_TRUE(dm.devices.empty());
}

TEST(DmVerityDevices, DifferentLayersGetDifferentDevices) {
  REQUIRE_LOOP();
  TempDir dir;
  auto f = testing::MakeFormattedImage(dir.Join("a"), 10);
  auto g = testing::MakeFormattedImage(dir.Join("b"), 11);
  RecordingDeviceMapper dm;
  DmVerityDevices devices(&dm);
  auto a = devices.Acquire(f.path, f.descriptor);
  auto b = devices.Acquire(g.path, g.descriptor);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->path(), b->path());
  EXPECT_EQ(dm.devices.size(), 2u);
}

TEST(DmVerityDevices, AdoptsADeviceLeftByAnEarlierRun) {
  REQUIRE_LOOP();
  TempDir dir;
  auto f = testing::MakeFormattedImage(dir.Join("a"), 10);
  RecordingDeviceMapper dm;
  dm.devices.insert(DmVerityDeviceName(f.descriptor.root_digest));
  DmVerityDevices devices(&dm);
  {
    auto a = devices.Acquire(f.path, f.descriptor);
    ASSERT_TRUE(a.ok());
    EXPECT_TRUE(dm.calls.empty());
  }
  EXPECT_EQ(dm.calls.size(), 1u);
  EXPECT_TRUE(dm.devices.empty());
}

TEST(DmVerityDevices, FailedCreateNamesTheLayerAndLeavesNoLoopDevice) {
  REQUIRE_LOOP();
  TempDir dir;
  auto f = testing::MakeFormattedImage(dir.Join("a"), 10);
  RecordingDeviceMapper dm;
  dm.fail_create = true;
  DmVerityDevices devices(&dm);
  std::string before = ShOk("losetup -a | grep -c '" + f.path + "' || true");
  auto a = devices.Acquire(f.path, f.descriptor);
  EXPECT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find(f.path), std::string::npos) << a.status().ToString();
  EXPECT_EQ(devices.users(f.descriptor.root_digest), 0);
  EXPECT_EQ(ShOk("losetup -a | grep -c '" + f.path + "' || true"), before);
}

TEST(DmVerityKernel, ActivatesMountsAndFailsTamperedReads) {
  EVS_REQUIRE_ROOT();
  auto dm = OpenDeviceMapper();
  if (!dm.ok()) GTEST_SKIP() << dm.status().message();
  if (!evs::testing::KernelHasFilesystem("erofs")) GTEST_SKIP() << "kernel lacks erofs";
  EVS_REQUIRE_PROGRAM("mkfs.erofs");
  TempDir dir;
  evs::testing::WriteFile(dir.Join("src/a.txt"), "EVS-DM-MARKER-" + std::string(20000, 'a'));
  evs::testing::WriteFile(dir.Join("src/sub/b.txt"), "bee\n");
  std::string img = dir.Join("layer.erofs");
  ShOk("mkfs.erofs --quiet -Enoinline_data '" + img + "' '" + dir.Join("src") + "'");
  auto f = testing::FormatExisting(img);
  DmVerityDevices devices(dm->get());
  ::mkdir(dir.Join("m1").c_str(), 0755);
  ::mkdir(dir.Join("m2").c_str(), 0755);
  {
    auto m1 = DmVerityErofsMount::Mount(devices, img, f.descriptor, dir.Join("m1"));
    ASSERT_TRUE(m1.ok()) << m1.status().ToString();
    auto m2 = DmVerityErofsMount::Mount(devices, img, f.descriptor, dir.Join("m2"));
    ASSERT_TRUE(m2.ok()) << m2.status().ToString();
    EXPECT_EQ((*m1)->device(), (*m2)->device());
    EXPECT_EQ(devices.users(f.descriptor.root_digest), 2);
    EXPECT_EQ(ReadFileOrDie(dir.Join("m1/sub/b.txt")), "bee\n");
    EXPECT_EQ(testing::DescribeTree(dir.Join("m1")), testing::DescribeTree(dir.Join("src")));
  }
  auto exists = (*dm)->Exists(DmVerityDeviceName(f.descriptor.root_digest));
  ASSERT_TRUE(exists.ok());
  EXPECT_FALSE(*exists) << "device not removed after its last user";

  // Tampered data: the read fails with EIO, the other file still reads.
  testing::FlipByte(img, testing::FindUnique(img, "EVS-DM-MARKER-") + 1);
  auto m = DmVerityErofsMount::Mount(devices, img, f.descriptor, dir.Join("m1"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(ReadFileOrDie(dir.Join("m1/sub/b.txt")), "bee\n");
  UniqueFd fd(::open(dir.Join("m1/a.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  char buf[4096];
  errno = 0;
  EXPECT_LT(::pread(fd.get(), buf, sizeof buf, 0), 0);
  EXPECT_EQ(errno, EIO);
}

}  // namespace
}  // namespace evs::verity
