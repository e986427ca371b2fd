// ErofsReader on hostile input: images made by the writer (full and
// tar-index) and by mkfs.erofs, corrupted at random offsets, truncated, or
// replaced by garbage behind a valid magic, are opened and read through
// completely. Each must give a status — OK or an error naming the image —
// and never crash or read out of bounds (scripts/test.sh runs this under
// ASan). Seeds are fixed, so a failure reproduces.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "evs/common/file.h"
#include "image_builder.h"
#include "read_everything.h"

namespace evs::testing {
namespace {

// An image with every structure the reader parses: multi-block and inline
// directories, inline and plain tails, shared and inline xattrs, symlinks
// inline and in blocks, devices, hardlinks, an opaque directory.
std::string RichImage(const TempDir& t, erofs::Mode mode) {
  erofs::WriterOptions o;
  o.mode = mode;
  ImageBuilder b(t.Join(mode == erofs::Mode::kFull ? "full.img" : "index.img"), o);
  std::string tar(64 << 10, 't');
  if (mode == erofs::Mode::kTarIndex) {
    EXPECT_TRUE(b.writer()->AddTarBytes(tar.data(), tar.size()).ok());
  }
  auto file = [&](const std::string& path, size_t size,
                  std::vector<std::pair<std::string, std::string>> x = {}) {
    LayerEntry e = Entry(path, EntryType::kRegular, 0644, static_cast<int64_t>(size));
    e.xattrs = std::move(x);
    e.size = size;
    e.data_offset = (size * 512) % (32 << 10);
    std::string data(size, static_cast<char>('a' + size % 26));
    StringSource s(data);
    EXPECT_TRUE(b.writer()->Add(e, &s).ok()) << path;
  };
  EXPECT_TRUE(b.Dir("wide").ok());
  for (int i = 0; i < 300; ++i)
    file("wide/" + std::string(1 + i % 60, 'w') + std::to_string(i), i * 3);
  for (size_t s : {0, 1, 100, 4095, 4096, 4097, 9000}) file("sizes/" + std::to_string(s), s);
  for (int i = 0; i < 4; ++i)
    file("caps/" + std::to_string(i), 10,
         {{"security.capability", std::string(20, 'c')}, {"user.i", std::to_string(i)}});
  file("fat", 3000, {{"user.big", std::string(2000, 'b')}});
  EXPECT_TRUE(b.Symlink("short", "sizes/1").ok());
  EXPECT_TRUE(b.Symlink("long", std::string(4000, 'l')).ok());
  EXPECT_TRUE(b.Link("hard", "sizes/100").ok());
  LayerEntry dev = Entry("dev", EntryType::kCharDevice);
  dev.rdev_major = 1;
  dev.rdev_minor = 3;
  EXPECT_TRUE(b.Add(dev).ok());
  EXPECT_TRUE(b.Add(Entry("wide", EntryType::kOpaqueMarker)).ok());
  EXPECT_TRUE(b.Finish().ok());
  return ReadFileOrDie(b.path());
}

struct Outcome {
  int opened_ok = 0, read_ok = 0, failed = 0;
};

Outcome CorruptAndRead(const std::string& image, int rounds, uint32_t seed) {
  std::mt19937 rng(seed);
  Outcome o;
  for (int round = 0; round < rounds; ++round) {
    std::string bytes = image;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < flips; ++i) {
      // A quarter of the flips hit the superblock, the rest anywhere.
      size_t at = rng() % 4 == 0 ? 1024 + rng() % 128 : rng() % bytes.size();
      switch (rng() % 4) {
        case 0:
          bytes[at] = static_cast<char>(rng());
          break;
        case 1:
          bytes[at] ^= static_cast<char>(1 << (rng() % 8));
          break;
        case 2:
          bytes[at] = '\xff';
          break;
        default:
          bytes[at] = 0;
          break;
      }
    }
    Status s = OpenAndReadEverything(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    if (s.ok()) {
      ++o.read_ok;
    } else {
      ++o.failed;
      // Errors name what they are about.
      EXPECT_FALSE(s.message().empty());
    }
  }
  return o;
}

TEST(ErofsReaderHostile, IntactImagesReadCompletely) {
  TempDir t;
  for (auto mode : {erofs::Mode::kFull, erofs::Mode::kTarIndex}) {
    std::string image = RichImage(t, mode);
    Status s = OpenAndReadEverything(reinterpret_cast<const uint8_t*>(image.data()), image.size());
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
}

TEST(ErofsReaderHostile, RandomCorruptionOfFullImagesNeverCrashes) {
  TempDir t;
  Outcome o = CorruptAndRead(RichImage(t, erofs::Mode::kFull), 1500, 1);
  // Most corruptions are caught (checksum, bounds, order); some land in
  // bytes nothing checks (file data, padding) and read fine.
  EXPECT_GT(o.failed, 500);
  EXPECT_GT(o.read_ok, 0);
}

TEST(ErofsReaderHostile, RandomCorruptionOfTarIndexImagesNeverCrashes) {
  TempDir t;
  Outcome o = CorruptAndRead(RichImage(t, erofs::Mode::kTarIndex), 1000, 2);
  EXPECT_GT(o.failed, 250);
}

TEST(ErofsReaderHostile, RandomCorruptionWithoutTheChecksumNeverCrashes) {
  // With the checksum flag cleared, corruption of the superblock fields gets
  // past Open() and reaches every parser behind it.
  TempDir t;
  std::string image = RichImage(t, erofs::Mode::kFull);
  image[1024 + 8] &= ~1;  // feature_compat: no SB_CHKSUM
  std::mt19937 rng(3);
  int opened = 0;
  for (int round = 0; round < 1000; ++round) {
    std::string bytes = image;
    for (int i = 0, n = 1 + static_cast<int>(rng() % 4); i < n; ++i) {
      size_t at = rng() % 2 == 0 ? 1024 + 12 + rng() % 116 : rng() % bytes.size();
      bytes[at] = static_cast<char>(rng());
    }
    Status s = OpenAndReadEverything(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    if (s.ok() || s.message().find("checksum") == std::string::npos) ++opened;
  }
  EXPECT_GT(opened, 500);
}

TEST(ErofsReaderHostile, TruncatedImagesAreRejected) {
  TempDir t;
  std::string image = RichImage(t, erofs::Mode::kFull);
  for (size_t len : {size_t{0}, size_t{100}, size_t{1100}, size_t{4096}, image.size() / 2,
                     image.size() - 4096, image.size() - 1}) {
    Status s = OpenAndReadEverything(reinterpret_cast<const uint8_t*>(image.data()), len);
    EXPECT_FALSE(s.ok()) << "length " << len;
  }
}

TEST(ErofsReaderHostile, GarbageBehindAValidSuperblockNeverCrashes) {
  std::mt19937 rng(4);
  for (int round = 0; round < 500; ++round) {
    std::string bytes(16 << 10, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    erofs::SuperBlock sb{};
    sb.magic = erofs::kSuperMagic;
    sb.blkszbits = static_cast<uint8_t>(9 + rng() % 4);
    sb.blocks = static_cast<uint32_t>(bytes.size() >> sb.blkszbits);
    sb.root_nid = static_cast<uint16_t>(rng() % 64);
    sb.meta_blkaddr = rng() % 4;
    sb.xattr_blkaddr = rng() % 4;
    sb.feature_incompat =
        rng() % 2 ? erofs::kFeatureIncompatChunkedFile | erofs::kFeatureIncompatDeviceTable : 0;
    sb.extra_devices = static_cast<uint16_t>(rng() % 3);
    sb.devt_slotoff = static_cast<uint16_t>(9 + rng() % 4);
    std::memcpy(bytes.data() + 1024, &sb, sizeof sb);
    (void)OpenAndReadEverything(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
}

TEST(ErofsReaderHostile, CorruptedMkfsImagesNeverCrash) {
  EVS_REQUIRE_PROGRAM("mkfs.erofs");
  TempDir t;
  ShOk("mkdir -p '" + t.Join("src/d") + "' && cd '" + t.Join("src") +
       "' && for i in $(seq 1 200); do echo $i > d/f$i; done && head -c 10000 /dev/zero > big && "
       "ln -s d/f1 link && ln d/f2 hard");
  // Default layout (inline tails) and chunked files with 4-byte block maps.
  for (const std::string flags : {"", "--chunksize=4096"}) {
    ShOk("mkfs.erofs " + flags + " '" + t.Join("mkfs.img") + "' '" + t.Join("src") +
         "' >/dev/null");
    std::string image = ReadFileOrDie(t.Join("mkfs.img"));
    Status intact =
        OpenAndReadEverything(reinterpret_cast<const uint8_t*>(image.data()), image.size());
    EXPECT_TRUE(intact.ok()) << flags << ": " << intact.ToString();
    Outcome o = CorruptAndRead(image, 500, 5);
    EXPECT_GT(o.failed, 0) << flags;
  }
}

}  // namespace
}  // namespace evs::testing
