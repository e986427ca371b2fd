// `evs layer …` as a user meets it: help on every command, the output file
// only when everything worked, quiet in scripts, a progress line on a
// terminal, and inspect/ls/cat showing what the image holds.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "test_util.h"

namespace evs::testing {
namespace {

std::string Evs() { return StrCat("'", BuildDir(), "/src/cli/evs'"); }

class EvsLayerCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ShOk("mkdir -p '" + t_.Join("src/dir") + "'");
    WriteFile(t_.Join("src/dir/hello.txt"), "hello, world\n");
    WriteFile(t_.Join("src/big"), std::string(100000, 'b'));
    ShOk("cd '" + t_.Join("src") +
         "' && ln -s dir/hello.txt link && tar -cf ../layer.tar . && gzip -k ../layer.tar");
  }
  std::string Ls() const { return ShOk("ls -A '" + t_.path() + "'"); }  // dot files too
  TempDir t_;
};

TEST_F(EvsLayerCli, EveryCommandHasHelp) {
  for (const char* cmd : {"layer", "layer convert", "layer inspect", "layer ls", "layer cat"}) {
    SubprocessResult r = Sh(Evs() + " " + cmd + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.stdout_data.find("Usage"), std::string::npos) << cmd << ": " << r.stdout_data;
  }
  EXPECT_NE(ShOk(Evs() + " layer convert --help").find("--from-dir"), std::string::npos);
}

TEST_F(EvsLayerCli, ConvertIsQuietInScriptsAndTheImageReadsBack) {
  SubprocessResult r =
      Sh(Evs() + " layer convert '" + t_.Join("layer.tar.gz") + "' '" + t_.Join("out.erofs") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_EQ(r.stdout_data, "");
  EXPECT_EQ(r.stderr_data, "");
  EXPECT_EQ(ShOk(Evs() + " layer cat '" + t_.Join("out.erofs") + "' dir/hello.txt"),
            "hello, world\n");
  EXPECT_EQ(ShOk(Evs() + " layer cat '" + t_.Join("out.erofs") + "' /big"),
            std::string(100000, 'b'));
  const std::string ls = ShOk(Evs() + " layer ls '" + t_.Join("out.erofs") + "'");
  EXPECT_NE(ls.find(" dir\n"), std::string::npos) << ls;
  EXPECT_NE(ls.find("link -> dir/hello.txt"), std::string::npos) << ls;
  EXPECT_NE(ls.find("-rw-r--r--"), std::string::npos) << ls;
  const std::string one = ShOk(Evs() + " layer ls '" + t_.Join("out.erofs") + "' big");
  EXPECT_NE(one.find("100000"), std::string::npos) << one;
  const std::string inspect = ShOk(Evs() + " layer inspect '" + t_.Join("out.erofs") + "'");
  EXPECT_NE(inspect.find("block size:     4096"), std::string::npos) << inspect;
  EXPECT_NE(inspect.find("checksum:       crc32c ok"), std::string::npos) << inspect;
  EXPECT_NE(inspect.find("2 files"), std::string::npos) << inspect;
}

TEST_F(EvsLayerCli, ConvertReadsStdinAndBuildsTarIndexImages) {
  ShOk("cat '" + t_.Join("layer.tar") + "' | " + Evs() + " layer convert --mode index - '" +
       t_.Join("idx.erofs") + "'");
  const std::string inspect = ShOk(Evs() + " layer inspect '" + t_.Join("idx.erofs") + "'");
  EXPECT_NE(inspect.find("layout:         tar-index"), std::string::npos) << inspect;
  EXPECT_NE(inspect.find("block size:     512"), std::string::npos) << inspect;
  EXPECT_EQ(ShOk(Evs() + " layer cat '" + t_.Join("idx.erofs") + "' dir/hello.txt"),
            "hello, world\n");
}

TEST_F(EvsLayerCli, ConvertFromDirectory) {
  ShOk(Evs() + " layer convert --from-dir '" + t_.Join("src") + "' '" + t_.Join("dir.erofs") + "'");
  EXPECT_EQ(ShOk(Evs() + " layer cat '" + t_.Join("dir.erofs") + "' dir/hello.txt"),
            "hello, world\n");
  SubprocessResult r = Sh(Evs() + " layer convert --mode index --from-dir '" + t_.Join("src") +
                          "' '" + t_.Join("x.erofs") + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.stderr_data.find("index"), std::string::npos) << r.stderr_data;
}

TEST_F(EvsLayerCli, FailedConversionLeavesNoFileBehind) {
  // A gzip stream cut in half: the error names the input, no output appears.
  ShOk("head -c 300 '" + t_.Join("layer.tar.gz") + "' > '" + t_.Join("cut.gz") + "'");
  SubprocessResult r =
      Sh(Evs() + " layer convert '" + t_.Join("cut.gz") + "' '" + t_.Join("out.erofs") + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.stderr_data.find("cut.gz"), std::string::npos) << r.stderr_data;
  // Garbage that is not a tar.
  WriteFile(t_.Join("junk"), std::string(5000, 'j'));
  r = Sh(Evs() + " layer convert '" + t_.Join("junk") + "' '" + t_.Join("out.erofs") + "'");
  EXPECT_NE(r.exit_code, 0);
  // A missing input.
  r = Sh(Evs() + " layer convert '" + t_.Join("absent.tar") + "' '" + t_.Join("out.erofs") + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.stderr_data.find("absent.tar"), std::string::npos) << r.stderr_data;
  // An existing output is left as it was.
  WriteFile(t_.Join("keep.erofs"), "old");
  r = Sh(Evs() + " layer convert '" + t_.Join("junk") + "' '" + t_.Join("keep.erofs") + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(ReadFileOrDie(t_.Join("keep.erofs")), "old");
  const std::string left = Ls();
  EXPECT_EQ(left.find("out.erofs"), std::string::npos) << left;
  EXPECT_EQ(left.find(".tmp"), std::string::npos) << left;
}

TEST_F(EvsLayerCli, AGzipStreamThatNeverEndsStopsAtTheCap) {
  // Zeros forever: an empty archive, then data that never ends. The
  // default cap is on (64 GiB, like the snapshotter's); a small one makes
  // the test quick.
  EXPECT_NE(ShOk(Evs() + " layer convert --help").find("68719476736"), std::string::npos);
  SubprocessResult r =
      Sh("cat /dev/zero | gzip -1 | " + Evs() + " layer convert --max-tar-bytes 33554432 - '" +
         t_.Join("bomb.erofs") + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.stderr_data.find("exceeds the limit of 33554432 bytes"), std::string::npos)
      << r.stderr_data;
  const std::string left = Ls();
  EXPECT_EQ(left.find("bomb.erofs"), std::string::npos) << left;
  EXPECT_EQ(left.find(".tmp"), std::string::npos) << left;
}

TEST_F(EvsLayerCli, ConvertChecksDigestsWhenGiven) {
  const std::string blob_digest =
      "sha256:" + ShOk("sha256sum '" + t_.Join("layer.tar.gz") + "' | cut -d' ' -f1").substr(0, 64);
  const std::string diff_id =
      "sha256:" + ShOk("sha256sum '" + t_.Join("layer.tar") + "' | cut -d' ' -f1").substr(0, 64);
  ShOk(Evs() + " layer convert --blob-digest " + blob_digest + " --diff-id " + diff_id + " '" +
       t_.Join("layer.tar.gz") + "' '" + t_.Join("ok.erofs") + "'");
  const std::string wrong = "sha256:" + std::string(64, '0');
  for (const std::string flag : {"--blob-digest", "--diff-id"}) {
    SubprocessResult r = Sh(Evs() + " layer convert " + flag + " " + wrong + " '" +
                            t_.Join("layer.tar.gz") + "' '" + t_.Join("bad.erofs") + "'");
    EXPECT_NE(r.exit_code, 0) << flag;
    EXPECT_NE(r.stderr_data.find(wrong), std::string::npos) << flag << ": " << r.stderr_data;
    EXPECT_EQ(Sh("test -e '" + t_.Join("bad.erofs") + "'").exit_code, 1) << flag;
  }
}

TEST_F(EvsLayerCli, ReadingCommandsFailOnMissingPathsAndNonFiles) {
  ShOk(Evs() + " layer convert '" + t_.Join("layer.tar") + "' '" + t_.Join("out.erofs") + "'");
  SubprocessResult r = Sh(Evs() + " layer cat '" + t_.Join("out.erofs") + "' nothing/here");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.stderr_data.find("nothing/here"), std::string::npos) << r.stderr_data;
  EXPECT_NE(Sh(Evs() + " layer cat '" + t_.Join("out.erofs") + "' dir").exit_code, 0);
  EXPECT_NE(Sh(Evs() + " layer cat '" + t_.Join("out.erofs") + "' link").exit_code, 0);
  EXPECT_NE(Sh(Evs() + " layer inspect '" + t_.Join("layer.tar") + "'").exit_code, 0);
}

TEST_F(EvsLayerCli, ProgressLineOnATerminal) {
  EVS_REQUIRE_PROGRAM("script");
  // script(1) runs the command on a pseudo-terminal.
  const std::string out =
      ShOk("script -qec \"" + Evs() + " layer convert '" + t_.Join("layer.tar.gz") + "' '" +
           t_.Join("tty.erofs") + "'\" /dev/null");
  EXPECT_NE(out.find("/s"), std::string::npos) << "a throughput figure: " << out;
  EXPECT_NE(out.find("inodes"), std::string::npos) << out;
}

}  // namespace
}  // namespace evs::testing
