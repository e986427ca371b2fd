#include "verity_test_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <vector>

#include "evs/common/fd.h"
#include "evs/common/file.h"
#include "evs/verity/tree_builder.h"
#include "test_util.h"

namespace evs::verity::testing {

void WritePatternFile(const std::string& path, uint64_t size, uint64_t seed) {
  ASSERT_TRUE(MakeDirs(Dirname(path)).ok()) << path;
  auto fd = OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  std::vector<uint64_t> buf(1 << 17);  // 1 MiB
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (uint64_t done = 0; done < size;) {
    for (auto& w : buf) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      w = x;
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(size - done, buf.size() * 8));
    ASSERT_TRUE(WriteAll(fd->get(), buf.data(), n, path).ok());
    done += n;
  }
}

std::string VeritysetupFormat(const std::string& path, const VerityParams& params) {
  std::string cmd =
      StrCat("veritysetup format --hash-offset=", params.hash_offset(),
             " --data-blocks=", params.data_blocks, " --data-block-size=", params.data_block_size,
             " --hash-block-size=", params.hash_block_size, " --salt=", SaltHex(params.salt),
             " --uuid=", UuidToString(params.uuid), " --format=", params.hash_type,
             " --hash=", HashAlgorithmName(params.algorithm), " '", path, "' '", path, "'");
  SubprocessResult r = evs::testing::Sh(cmd);
  if (r.exit_code != 0) {
    ADD_FAILURE() << cmd << "\n" << r.stdout_data << r.stderr_data;
    return "";
  }
  auto at = r.stdout_data.find("Root hash:");
  if (at == std::string::npos) {
    ADD_FAILURE() << "no root hash in: " << r.stdout_data;
    return "";
  }
  std::string rest = r.stdout_data.substr(at + 10);
  size_t b = rest.find_first_not_of(" \t");
  size_t e = rest.find_first_of("\r\n", b);
  return rest.substr(b, e - b);
}

bool VeritysetupVerify(const std::string& path, uint64_t hash_offset, const std::string& root_hex) {
  SubprocessResult r = evs::testing::Sh(StrCat("veritysetup verify --hash-offset=", hash_offset,
                                               " '", path, "' '", path, "' ", root_hex));
  return r.exit_code == 0;
}

void FlipByte(const std::string& path, uint64_t offset) {
  auto fd = OpenFile(path, O_RDWR);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  uint8_t b = 0;
  auto got = PreadFull(fd->get(), &b, 1, static_cast<off_t>(offset), path);
  ASSERT_TRUE(got.ok() && *got == 1) << "no byte at " << offset << " of " << path;
  b ^= 0x01;
  ASSERT_TRUE(PwriteAll(fd->get(), &b, 1, static_cast<off_t>(offset), path).ok());
}

}  // namespace evs::verity::testing

namespace evs::verity::testing {

FormattedImage FormatExisting(const std::string& path, uint32_t dbs) {
  FormattedImage f;
  f.path = path;
  FormatOptions options;
  options.params.data_block_size = dbs;
  auto d = FormatImageFile(path, options);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  if (!d.ok()) return f;
  f.descriptor = *d;
  auto layout = TreeLayout::Compute(f.descriptor.params, f.descriptor.hash_offset);
  EXPECT_TRUE(layout.ok());
  if (layout.ok()) f.layout = *layout;
  return f;
}

FormattedImage MakeFormattedImage(const std::string& path, uint64_t blocks, uint32_t dbs) {
  WritePatternFile(path, blocks * dbs, blocks + dbs);
  return FormatExisting(path, dbs);
}

std::string DescribeTree(const std::string& root) {
  return evs::testing::ShOk("cd '" + root +
                            "' && find . -printf '%p|%y|%m|%U|%G|%s|%l\\n' | LC_ALL=C sort && "
                            "find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum && "
                            "getfattr -R -P -d -m - -e hex . 2>/dev/null | LC_ALL=C sort");
}

uint64_t FindUnique(const std::string& path, const std::string& needle) {
  std::string data = evs::testing::ReadFileOrDie(path);
  size_t at = data.find(needle);
  EXPECT_NE(at, std::string::npos) << "marker not in " << path;
  if (at == std::string::npos) return 0;
  EXPECT_EQ(data.find(needle, at + 1), std::string::npos) << "marker twice in " << path;
  return at;
}

}  // namespace evs::verity::testing
