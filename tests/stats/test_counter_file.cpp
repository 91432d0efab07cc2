// Counter files (src/stats/counter_file.hpp): folding exactly once, including the files of
// processes that are gone, distrust of implausible counts, and a file truncated under its
// process.
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <cstring>
#include <fstream>
#include <thread>

#include "stats/counter_file.hpp"
#include "stats/stats_file.hpp"
#include "support.hpp"
#include "util/fs.hpp"

using namespace larder;
using namespace larder::test;

namespace {

bool decode(std::string_view bytes, stats::CounterValues* out, std::string* error) {
  auto r = stats::decode_counter_file(bytes);
  if (!r) {
    *error = r.error();
    return false;
  }
  *out = *r;
  return true;
}

std::unique_ptr<stats::CounterFile> create_counter_file(const std::filesystem::path& dir,
                                                        std::string* error) {
  auto r = stats::CounterFile::create(dir);
  if (!r) {
    *error = r.error();
    return nullptr;
  }
  return std::move(*r);
}

}  // namespace

TEST_CASE("counter files fold exactly once, including those of processes that are gone") {
  TempDir tmp;
  const auto dir = tmp.path();
  const auto now = std::chrono::system_clock::now();
  std::string error;
  auto a = create_counter_file(dir, &error);
  auto b = create_counter_file(dir, &error);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->id() != b->id());
  a->counters().hit += 5;
  b->counters().miss += 3;
  stats::Snapshot s;
  REQUIRE(stats::fold_stats(dir, a.get(), stats::FoldMode::save, now, {}, &s).ok());
  CHECK(s.hit_count == 5);
  CHECK(s.miss_count == 3);
  CHECK(s.contributors.size() == 2);

  a->counters().hit += 2;
  b->counters().miss += 1;
  REQUIRE(stats::read_stats(dir, a.get(), &s).ok());  // a view: nothing written
  CHECK(s.hit_count == 7);
  CHECK(s.miss_count == 4);
  stats::Snapshot on_disk;
  REQUIRE(stats::load_stats(dir / stats::kStatsFileName, now, &on_disk, &error) ==
          stats::LoadResult::loaded);
  CHECK(on_disk.hit_count == 5);

  // b's process is gone without folding (as after SIGKILL): its lock is free, its file remains.
  const auto b_path = b->path();
  b.reset();
  REQUIRE(std::filesystem::exists(b_path));
  REQUIRE(stats::fold_stats(dir, a.get(), stats::FoldMode::save, now, {}, &s).ok());
  CHECK(s.hit_count == 7);
  CHECK(s.miss_count == 4);
  CHECK_FALSE(std::filesystem::exists(b_path));
  CHECK(s.contributors.size() == 1);
  REQUIRE(stats::fold_stats(dir, a.get(), stats::FoldMode::save, now, {}, &s).ok());
  CHECK(s.hit_count == 7);  // folding again adds nothing
  CHECK(s.miss_count == 4);

  // Zeroing: totals restart from zero, later growth counts.
  REQUIRE(stats::fold_stats(dir, a.get(), stats::FoldMode::zero, now, {}, &s).ok());
  CHECK(s.hit_count == 0);
  CHECK_FALSE(s.last_zeroed.empty());
  a->counters().hit += 2;
  REQUIRE(stats::fold_stats(dir, a.get(), stats::FoldMode::close, now, {}, &s).ok());
  CHECK(s.hit_count == 2);
  CHECK(s.contributors.empty());
  CHECK_FALSE(std::filesystem::exists(a->path()));
}

TEST_CASE("a counter file with implausible counts is left out, not trusted") {
  TempDir tmp;
  const auto dir = tmp.path();
  std::string error;
  auto real = create_counter_file(dir, &error);
  REQUIRE(real);
  real->counters().hit += 2;
  // A copy of a valid file whose error counter says 2^64 - 256.
  auto read = util::read_cache_file(dir / ".stats" / (real->id() + ".cnt"), 1 << 20);
  REQUIRE(read.ok());
  std::string bytes = *read;
  stats::CounterValues v{};
  REQUIRE(decode(bytes, &v, &error));
  CHECK(v[0] == 2);
  const std::uint64_t absurd = 18446744073709551360ull;
  for (std::size_t i = 0; i < stats::kCounterCount; ++i)
    std::memcpy(bytes.data() + stats::kCounterOffset + i * 8, &absurd, 8);
  CHECK_FALSE(decode(bytes, &v, &error));
  CHECK(error.find("implausible") != std::string::npos);
  { std::ofstream(dir / ".stats" / "forged.cnt", std::ios::binary) << bytes; }
  stats::Snapshot s;
  std::string warning;
  REQUIRE(stats::fold_stats(dir, real.get(), stats::FoldMode::save,
                            std::chrono::system_clock::now(), {}, &s, &warning)
              .ok());
  CHECK(s.error_count < 1000);
  CHECK(s.hit_count == 2);
  CHECK(warning.find("implausible") != std::string::npos);
}

TEST_CASE("truncating a live counter file does not kill its process with SIGBUS") {
  TempDir tmp;
  const auto dir = tmp.path();
  // In a child: a SIGBUS must not take the test runner down with it if the guard fails.
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::string error;
    auto file = create_counter_file(dir, &error);
    if (!file) ::_exit(10);
    file->counters().hit += 3;
    const auto path = dir / ".stats" / (file->id() + ".cnt");
    if (::truncate(path.c_str(), 0) != 0) ::_exit(11);
    file->counters().hit += 1;  // faults on the truncated page
    if (!file->lost()) ::_exit(12);
    stats::Snapshot s;
    std::string warning;
    (void)stats::fold_stats(dir, file.get(), stats::FoldMode::save,
                            std::chrono::system_clock::now(), {}, &s, &warning);
    ::_exit(warning.find("truncated") != std::string::npos ? 0 : 13);
  }
  const int status = wait_bounded(pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
