#include "stats/counter_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <vector>

#include <fmt/format.h>

#include "util/fs.hpp"
#include "util/mapping_guard.hpp"

namespace larder::stats {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'l', 'a', 'r', 'd', 'e', 'r', 'c', 'f'};
constexpr const char* kSuffix = ".cnt";

struct Header {
  char magic[8];
  std::uint32_t format;
  std::uint32_t count;
  std::int64_t pid;
  std::int64_t created_ns;
};
static_assert(sizeof(Header) <= kCounterOffset);

std::string new_id() {
  static std::mt19937_64 rng{std::random_device{}()};
  static std::mutex mu;
  std::lock_guard lock(mu);
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return fmt::format("{}-{}-{:08x}", ::getpid(),
                     std::chrono::duration_cast<std::chrono::milliseconds>(now).count(),
                     static_cast<std::uint32_t>(rng()));
}

// Another process's counter file, mapped read-only.
class Mapped {
 public:
  explicit Mapped(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(kCounterFileBytes)) return;
    void* m = ::mmap(nullptr, kCounterFileBytes, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return;
    util::guard_mapping(m, kCounterFileBytes);  // its owner may truncate it while we read
    Header h{};
    std::memcpy(&h, m, sizeof h);
    if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.format != kCounterFileFormat ||
        h.count < kCounterCount) {
      util::unguard_mapping(m);
      ::munmap(m, kCounterFileBytes);
      return;
    }
    map_ = m;
  }
  ~Mapped() {
    if (map_ == nullptr) return;
    util::unguard_mapping(map_);
    ::munmap(map_, kCounterFileBytes);
  }
  Mapped(const Mapped&) = delete;
  Mapped& operator=(const Mapped&) = delete;
  bool valid() const { return map_ != nullptr; }
  CounterValues values() const {
    CounterValues v{};
    auto* words = reinterpret_cast<std::uint64_t*>(static_cast<char*>(map_) + kCounterOffset);
    for (std::size_t i = 0; i < kCounterCount; ++i)
      v[i] = __atomic_load_n(&words[i], __ATOMIC_RELAXED);
    return v;
  }

 private:
  void* map_ = nullptr;
};

bool plausible(const CounterValues& v) {
  for (std::uint64_t x : v)
    if (x > kMaxPlausibleCount) return false;
  return true;
}

void add_growth(Snapshot& s, const CounterValues& now, const CounterValues& before) {
  CounterValues totals = Counters::of(s);
  for (std::size_t i = 0; i < kCounterCount; ++i)
    if (now[i] > before[i]) totals[i] += now[i] - before[i];
  Counters::assign(totals, s);
}

struct Found {
  std::string id;
  fs::path path;
};

std::vector<Found> counter_files(const fs::path& dir) {
  std::vector<Found> out;
  std::error_code ec;
  // Never a symlinked .stats (its files would be retired, i.e. deleted), never symlinked files.
  if (fs::is_symlink(dir / kCounterDirName, ec)) return out;
  for (fs::directory_iterator it(dir / kCounterDirName, ec), end; !ec && it != end;
       it.increment(ec)) {
    const fs::path& p = it->path();
    std::error_code type_ec;
    if (p.extension() == kSuffix && it->symlink_status(type_ec).type() == fs::file_type::regular)
      out.push_back({p.stem().string(), p});
  }
  return out;
}

// Reads the statistics file; a corrupt one is moved aside (reported in *warning) and zeros used.
Snapshot load(const fs::path& dir, std::chrono::system_clock::time_point now,
              std::string* warning) {
  Snapshot s;
  std::string error;
  if (load_stats(dir / kStatsFileName, now, &s, &error) == LoadResult::corrupt && warning)
    *warning = error;
  return s;
}

}  // namespace

util::Result<std::unique_ptr<CounterFile>> CounterFile::create(const fs::path& dir) {
  const fs::path stats_dir = dir / kCounterDirName;
  if (auto made = util::create_private_directories(stats_dir, util::Symlinks::refuse); !made)
    return util::fail(made.error());
  std::unique_ptr<CounterFile> f(new CounterFile());
  f->id_ = new_id();
  // Locked under a temporary name first, so a folder never sees it unlocked and retires it.
  const fs::path tmp = stats_dir / fmt::format(".new-{}", f->id_);
  const fs::path final_path = stats_dir / (f->id_ + kSuffix);
  if (auto opened = f->lock_.open(tmp); !opened) return util::fail(opened.error());
  auto fail = [&](std::string_view step) {
    util::Failure why =
        util::fail("counter file {}: {}: {}", tmp.string(), step, std::strerror(errno));
    ::unlink(tmp.c_str());
    return why;
  };
  if (!util::held(f->lock_.try_lock())) return fail("lock");
  if (::ftruncate(f->lock_.fd(), kCounterFileBytes) != 0) return fail("resize");
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.format = kCounterFileFormat;
  h.count = kCounterCount;
  h.pid = ::getpid();
  h.created_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  if (::pwrite(f->lock_.fd(), &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h))
    return fail("write header");
  void* m =
      ::mmap(nullptr, kCounterFileBytes, PROT_READ | PROT_WRITE, MAP_SHARED, f->lock_.fd(), 0);
  if (m == MAP_FAILED) return fail("map");
  // Truncating the file (another process, a user) must not kill us with SIGBUS.
  util::guard_mapping(m, kCounterFileBytes);
  f->map_ = m;
  f->counters_ = new (static_cast<char*>(m) + kCounterOffset) Counters();
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) return fail("rename");
  f->path_ = final_path;  // same inode, same lock
  return f;
}

CounterFile::~CounterFile() {
  if (map_ == nullptr) return;
  util::unguard_mapping(map_);
  ::munmap(map_, kCounterFileBytes);
}

bool CounterFile::lost() const {
  return map_ != nullptr && util::mapping_lost(map_);
}

util::Status fold_stats(const fs::path& dir, CounterFile* own, FoldMode mode,
                        std::chrono::system_clock::time_point now,
                        const std::function<void(Snapshot&)>& update, Snapshot* out,
                        std::string* warning) {
  util::LockFile lock;
  if (auto opened = lock.open(dir / kStatsLockName); !opened) return opened;
  if (!lock.lock_for(std::chrono::seconds(5)))
    return util::fail("timed out waiting for {}", (dir / kStatsLockName).string());
  Snapshot s = load(dir, now, warning);
  std::set<std::string> seen;
  std::vector<fs::path> retired;
  for (const Found& f : counter_files(dir)) {
    seen.insert(f.id);
    const CounterValues before =
        s.contributors.count(f.id) ? s.contributors[f.id] : CounterValues{};
    if (own != nullptr && f.id == own->id()) {
      if (own->lost() && warning != nullptr)
        *warning = fmt::format(
            "{} was truncated while in use; this process's counts since then "
            "start again from zero",
            f.path.string());
      const CounterValues v = own->counters().values();
      add_growth(s, v, before);
      if (mode == FoldMode::close) {
        s.contributors.erase(f.id);
        retired.push_back(f.path);
      } else {
        s.contributors[f.id] = v;
      }
      continue;
    }
    util::LockFile other;
    if (!other.open(f.path, util::Create::no)) continue;  // removed meanwhile
    const bool gone = util::held(other.try_lock());
    const Mapped m(other.fd());
    if (m.valid()) {
      const CounterValues v = m.values();
      if (plausible(v)) {
        add_growth(s, v, before);
        s.contributors[f.id] = v;
      } else if (warning != nullptr) {
        *warning = fmt::format("{} holds implausible counts; left out", f.path.string());
      }
    }
    if (gone) {
      s.contributors.erase(f.id);
      retired.push_back(f.path);
    }
  }
  std::erase_if(s.contributors, [&](const auto& kv) { return !seen.count(kv.first); });
  if (mode == FoldMode::zero) {
    Counters::assign(CounterValues{}, s);
    s.last_zeroed = util::iso8601_utc(now);
  }
  if (update) update(s);
  s.last_updated = util::iso8601_utc(now);
  if (auto saved = save_stats(dir / kStatsFileName, s); !saved) return saved;
  // Only after the totals that include them are on disk.
  for (const fs::path& p : retired) ::unlink(p.c_str());
  if (out != nullptr) *out = std::move(s);
  return {};
}

util::Status read_stats(const fs::path& dir, const CounterFile* own, Snapshot* out) {
  Snapshot s;
  util::LockFile lock;
  util::Status read;
  std::error_code ec;
  if (fs::exists(dir / kStatsLockName, ec)) {  // else nothing was ever folded
    read = lock.open(dir / kStatsLockName, util::Create::no);
    if (read && !lock.lock_for(std::chrono::seconds(5), util::LockMode::shared))
      read = util::fail("timed out waiting for the statistics lock");
  }
  if (read) {
    std::string error;
    if (load_stats(dir / kStatsFileName, std::chrono::system_clock::now(), &s, &error) ==
        LoadResult::corrupt)
      read = util::fail(std::move(error));
  }
  for (const Found& f : counter_files(dir)) {
    const auto it = s.contributors.find(f.id);
    const CounterValues before = it != s.contributors.end() ? it->second : CounterValues{};
    if (own != nullptr && f.id == own->id()) {
      add_growth(s, own->counters().values(), before);
      continue;
    }
    util::LockFile other;
    if (!other.open(f.path, util::Create::no)) continue;
    const Mapped m(other.fd());
    if (m.valid() && plausible(m.values())) add_growth(s, m.values(), before);
  }
  *out = std::move(s);
  return read;
}

util::Result<CounterValues> decode_counter_file(std::string_view bytes) {
  if (bytes.size() < kCounterOffset + kCounterCount * sizeof(std::uint64_t))
    return util::fail("{} bytes: too short for a counter file", bytes.size());
  Header h{};
  std::memcpy(&h, bytes.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.format != kCounterFileFormat ||
      h.count < kCounterCount)
    return util::fail("not a counter file of this format");
  CounterValues v{};
  for (std::size_t i = 0; i < kCounterCount; ++i)
    std::memcpy(&v[i], bytes.data() + kCounterOffset + i * sizeof(std::uint64_t),
                sizeof(std::uint64_t));
  if (!plausible(v)) return util::fail("implausible counts");
  return v;
}

}  // namespace larder::stats
