#include "kv/rocks_kv.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <shared_mutex>

#include <fmt/format.h>

#include "util/fork.hpp"

#include <rocksdb/cache.h>
#include <rocksdb/compaction_filter.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_batch.h>

#include <array>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

namespace larder::kv {

namespace {

// recover() reopens a store only with at least this much free space on its filesystem.
constexpr std::uint64_t kReopenFreeBytes = 1024 * 1024;

constexpr std::array<const char*, kCfCount> kCfNames = {"entries", "access",   "order",
                                                        "expiry",  "category", "counters"};

Status from_rocks(const rocksdb::Status& s) {
  if (s.ok()) return Status();
  if (s.IsNotFound()) return Status::missing();
  if (s.IsCorruption()) return {Code::corruption, s.ToString()};
  return {Code::io_error, s.ToString()};
}

rocksdb::Slice slice(std::string_view v) {
  return {v.data(), v.size()};
}
std::string_view view(const rocksdb::Slice& s) {
  return {s.data(), s.size()};
}

class DropFilter final : public rocksdb::CompactionFilter {
 public:
  explicit DropFilter(const std::function<bool(std::string_view)>* drop) : drop_(drop) {}
  bool Filter(int, const rocksdb::Slice&, const rocksdb::Slice& value, std::string*,
              bool*) const override {
    return (*drop_)(view(value));
  }
  const char* Name() const override { return "larder.DropExpired"; }

 private:
  const std::function<bool(std::string_view)>* drop_;
};

class DropFilterFactory final : public rocksdb::CompactionFilterFactory {
 public:
  explicit DropFilterFactory(std::function<bool(std::string_view)> drop) : drop_(std::move(drop)) {}
  std::unique_ptr<rocksdb::CompactionFilter> CreateCompactionFilter(
      const rocksdb::CompactionFilter::Context&) override {
    return std::make_unique<DropFilter>(&drop_);
  }
  const char* Name() const override { return "larder.DropExpiredFactory"; }

 private:
  std::function<bool(std::string_view)> drop_;
};

// Applies or_byte operands (Batch::or_byte). Never fails: a failed merge would stop RocksDB's
// compactions; an operand that does not decode leaves an empty value, which reads as corrupt.
class OrByteOperator final : public rocksdb::MergeOperator {
 public:
  bool FullMergeV2(const MergeOperationInput& in, MergeOperationOutput* out) const override {
    if (in.existing_value != nullptr)
      out->new_value.assign(in.existing_value->data(), in.existing_value->size());
    else
      out->new_value.clear();
    for (const rocksdb::Slice& operand : in.operand_list)
      (void)apply_or_byte(view(operand), &out->new_value);
    return true;
  }
  const char* Name() const override { return "larder.OrByte"; }
};

class RocksBatch final : public Batch {
 public:
  static constexpr std::size_t kReserveBytes = 64 * 1024;
  RocksBatch(const std::vector<rocksdb::ColumnFamilyHandle*>* cfs) : cfs_(cfs) {}
  void put(Cf cf, std::string_view key, std::string_view value) override {
    batch.Put(h(cf), slice(key), slice(value));
  }
  void put_parts(Cf cf, std::string_view key, std::string_view head,
                 std::string_view tail) override {
    // A large value first in its batch: the batch is made with room for it and the small
    // records that follow, so it is copied into the batch once (not again as the batch grows).
    const std::size_t bytes = key.size() + head.size() + tail.size();
    if (bytes >= kReserveBytes && batch.Count() == 0) batch = rocksdb::WriteBatch(bytes + 4096);
    const rocksdb::Slice k = slice(key);
    const std::array<rocksdb::Slice, 2> v{slice(head), slice(tail)};
    batch.Put(h(cf), rocksdb::SliceParts(&k, 1), rocksdb::SliceParts(v.data(), 2));
  }
  void del(Cf cf, std::string_view key) override { batch.Delete(h(cf), slice(key)); }
  void delete_range(Cf cf, std::string_view begin, std::string_view end) override {
    if (end.empty()) {
      // RocksDB needs an end: every key of ours is shorter than this one and sorts before it.
      static const std::string kMax(8192, '\xff');
      batch.DeleteRange(h(cf), slice(begin), slice(kMax));
    } else {
      batch.DeleteRange(h(cf), slice(begin), slice(end));
    }
  }
  void or_byte(Cf cf, std::string_view key, std::uint32_t offset, std::uint8_t bits) override {
    batch.Merge(h(cf), slice(key), slice(or_byte_operand(offset, bits)));
  }
  std::size_t count() const override { return batch.Count(); }
  rocksdb::WriteBatch batch;

 private:
  rocksdb::ColumnFamilyHandle* h(Cf cf) const { return (*cfs_)[static_cast<int>(cf)]; }
  const std::vector<rocksdb::ColumnFamilyHandle*>* cfs_;
};

// Forwards RocksDB's log lines to larder's logger instead of a LOG file in the store.
class ForwardLogger final : public rocksdb::Logger {
 public:
  ForwardLogger(const util::Logger* log, std::function<void(std::string_view)> on_data_loss)
      : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL),
        log_(log),
        on_data_loss_(std::move(on_data_loss)) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (log_ == nullptr && !on_data_loss_) return;
    char line[1024];
    const int n = std::vsnprintf(line, sizeof line, format, ap);
    if (n < 0) return;
    const std::string_view text(
        line, std::min<std::size_t>(static_cast<std::size_t>(n), sizeof line - 1));
    // What RocksDB says when point-in-time recovery skips a damaged part of its log.
    if (on_data_loss_ && text.find("dropping") != std::string_view::npos &&
        text.find("Corruption") != std::string_view::npos)
      on_data_loss_(text);
    if (log_ == nullptr) return;
    const util::Level to =
        level >= rocksdb::InfoLogLevel::WARN_LEVEL ? util::Level::warn : util::Level::debug;
    log_->logf(to, "rocksdb: {}",
               std::string_view(
                   line, std::min<std::size_t>(static_cast<std::size_t>(n), sizeof line - 1)));
  }

 private:
  const util::Logger* log_;
  std::function<void(std::string_view)> on_data_loss_;
};

// How to (re)open one database.
struct OpenSpec {
  std::string dir;
  rocksdb::DBOptions db_options;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  bool read_only = false;
};

rocksdb::Status open_db(const OpenSpec& spec, rocksdb::DB** db,
                        std::vector<rocksdb::ColumnFamilyHandle*>* handles) {
  if (spec.read_only)
    return rocksdb::DB::OpenForReadOnly(spec.db_options, spec.dir, spec.descriptors, handles, db);
  return rocksdb::DB::Open(spec.db_options, spec.dir, spec.descriptors, handles, db);
}

// The stores this process has open for writing, by directory identity. RocksDB's own guard
// against opening one store twice in a process compares path names, and its fcntl lock does not
// stop the same process: a store reached by another name (a symlink, /proc/self/fd) would be
// opened twice.
class OpenStores {
 public:
  using Id = std::pair<dev_t, ino_t>;
  static bool claim(const Id& id) {
    std::lock_guard lock(mu());
    return ids().insert(id).second;
  }
  static void release(const Id& id) {
    std::lock_guard lock(mu());
    ids().erase(id);
  }

 private:
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::set<Id>& ids() {
    static std::set<Id> s;
    return s;
  }
};

class RocksKv final : public Kv {
 public:
  RocksKv(OpenSpec spec, rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> handles,
          std::optional<OpenStores::Id> claimed)
      : spec_(std::move(spec)), claimed_(claimed) {
    adopt(db, std::move(handles));
  }

  ~RocksKv() override {
    close_db();
    if (claimed_) OpenStores::release(*claimed_);
  }

  Status get(Cf cf, std::string_view key, std::string* value) override {
    std::shared_lock lock(mu_);
    if (db_ == nullptr) return closed();
    return from_rocks(db_->Get(rocksdb::ReadOptions(), h(cf), slice(key), value));
  }
  Status get_view(Cf cf, std::string_view key,
                  absl::FunctionRef<void(std::string_view)> fn) override {
    std::shared_lock lock(mu_);
    if (db_ == nullptr) return closed();
    rocksdb::PinnableSlice value;  // the block cache's bytes where it can, not a copy
    Status s = from_rocks(db_->Get(rocksdb::ReadOptions(), h(cf), slice(key), &value));
    if (s.ok()) fn(view(value));
    return s;
  }

  Status scan(Cf cf, std::string_view begin, std::string_view end, const ScanFn& fn) override {
    std::shared_lock lock(mu_);
    if (db_ == nullptr) return closed();
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;  // a scan (the index load, keys(), verify) must not evict gets' blocks
    if (begin.empty() && end.empty()) ro.readahead_size = 2 << 20;  // a whole family: sequential
    rocksdb::Slice upper = slice(end);
    if (!end.empty()) ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, h(cf)));
    for (it->Seek(slice(begin)); it->Valid(); it->Next()) {
      if (!fn(view(it->key()), view(it->value()))) break;
    }
    return from_rocks(it->status());
  }

  std::unique_ptr<Batch> new_batch() override { return std::make_unique<RocksBatch>(&cfs_); }

  Status write(Batch& batch) override {
    if (spec_.read_only) return {Code::io_error, "store opened read-only"};
    std::shared_lock lock(mu_);
    if (db_ == nullptr) return closed();
    if (reading_only_) return reading_only();
    return from_rocks(db_->Write(rocksdb::WriteOptions(), &static_cast<RocksBatch&>(batch).batch));
  }

  Status flush() override {
    if (spec_.read_only) return Status();
    std::shared_lock lock(mu_);
    if (db_ == nullptr) return closed();
    if (reading_only_) return reading_only();
    rocksdb::FlushOptions fo;
    fo.wait = true;
    return from_rocks(db_->Flush(fo, cfs_));
  }

  Status compact(Cf cf) override {
    if (spec_.read_only) return {Code::io_error, "store opened read-only"};
    std::shared_lock lock(mu_);
    if (db_ == nullptr) return closed();
    if (reading_only_) return reading_only();
    rocksdb::CompactRangeOptions co;
    co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    return from_rocks(db_->CompactRange(co, h(cf), nullptr, nullptr));
  }

  Status reset(Cf cf) override {
    if (spec_.read_only) return {Code::io_error, "store opened read-only"};
    std::unique_lock lock(mu_);
    if (db_ == nullptr) return closed();
    if (reading_only_) return reading_only();
    const auto i = static_cast<std::size_t>(cf);
    if (rocksdb::Status s = db_->DropColumnFamily(cfs_[i]); !s.ok()) return from_rocks(s);
    (void)db_->DestroyColumnFamilyHandle(cfs_[i]);
    cfs_[i] = nullptr;
    // descriptors[0] is "default"; ours follow in Cf order.
    const rocksdb::ColumnFamilyDescriptor& d = spec_.descriptors[i + 1];
    rocksdb::ColumnFamilyHandle* fresh = nullptr;
    if (rocksdb::Status s = db_->CreateColumnFamily(d.options, d.name, &fresh); !s.ok()) {
      // Without the family the store is unusable: close it; recover() reopens it (the reopen
      // creates the missing family).
      close_db();
      return from_rocks(s);
    }
    cfs_[i] = fresh;
    return Status();
  }

  Status recover(bool* reopened) override {
    *reopened = false;
    if (spec_.read_only) return Status();
    {
      std::shared_lock lock(mu_);
      if (db_ != nullptr && !reading_only_) {
        // Resume clears a recoverable background error (e.g. no space during a flush once space
        // is back); it is ok when there was none.
        const rocksdb::Status r = db_->Resume();
        if (r.ok() && probe_write().ok()) return Status();
      }
    }
    // Some errors (a failed WAL write, a file that vanished) are not resumable: reopen. Not while
    // the disk is still (nearly) full, though: the reopen would fail there, and until it worked
    // the store could not even be read.
    if (struct statvfs v{}; ::statvfs(spec_.dir.c_str(), &v) == 0 &&
                            static_cast<std::uint64_t>(v.f_bavail) * v.f_frsize < kReopenFreeBytes)
      return {Code::io_error, "the disk holding the store is still full"};
    // Nor while its directory cannot be written (mode, read-only filesystem): the reopen needs
    // new files.
    if (::faccessat(AT_FDCWD, spec_.dir.c_str(), W_OK | X_OK, AT_EACCESS) != 0)
      return {Code::io_error,
              fmt::format("the store's directory is not writable: {}", std::strerror(errno))};
    std::unique_lock lock(mu_);
    close_db();
    rocksdb::DB* db = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    const rocksdb::Status s = open_db(spec_, &db, &handles);
    if (!s.ok()) {
      Status st = from_rocks(s);
      if (st.not_found()) st.code = Code::io_error;
      // Keep serving reads from the same files, read-only, until a reopen works.
      OpenSpec view = spec_;
      view.read_only = true;
      if (open_db(view, &db, &handles).ok()) {
        adopt(db, std::move(handles));
        reading_only_ = true;
        *reopened = true;
      }
      return st;
    }
    adopt(db, std::move(handles));
    reading_only_ = false;
    *reopened = true;
    if (Status p = probe_write(); !p.ok()) return p;
    return Status();
  }

 private:
  static Status closed() { return {Code::io_error, "store closed after a failure; reopening"}; }
  static Status reading_only() {
    return {Code::io_error, "store open for reading only after a failed reopen; retrying"};
  }

  // A write of nothing durable: fails while RocksDB refuses writes.
  Status probe_write() {
    rocksdb::WriteBatch b;
    b.Delete(cfs_[static_cast<int>(Cf::counters)], "\x01larder-probe");
    return from_rocks(db_->Write(rocksdb::WriteOptions(), &b));
  }

  void adopt(rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> handles) {
    db_ = db;
    // handles[0] is "default"; ours follow in kCfNames order.
    default_ = handles[0];
    cfs_.assign(handles.begin() + 1, handles.end());
  }

  void close_db() {
    if (db_ == nullptr) return;
    std::vector<rocksdb::ColumnFamilyHandle*> live;  // a failed reset() leaves a null handle
    for (auto* handle : cfs_)
      if (handle != nullptr) live.push_back(handle);
    if (!spec_.read_only && !reading_only_) {
      rocksdb::FlushOptions fo;
      fo.wait = true;
      (void)db_->Flush(fo, live);
      (void)db_->SyncWAL();
    }
    for (auto* handle : live) (void)db_->DestroyColumnFamilyHandle(handle);
    (void)db_->DestroyColumnFamilyHandle(default_);
    (void)db_->Close();
    delete db_;
    db_ = nullptr;
  }

  rocksdb::ColumnFamilyHandle* h(Cf cf) const { return cfs_[static_cast<int>(cf)]; }
  OpenSpec spec_;
  std::optional<OpenStores::Id> claimed_;  // released when the store closes for good
  // Opened read-only by recover() after a failed reopen: reads work, writes are refused.
  bool reading_only_ = false;
  // Shared by every operation; exclusive while recover() closes and reopens the database.
  std::shared_mutex mu_;
  rocksdb::DB* db_ = nullptr;
  rocksdb::ColumnFamilyHandle* default_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
};

}  // namespace

namespace {

// The fork generation (util/fork.hpp) in which this process, or the ancestor it was forked from,
// first opened a store; -1 if none did.
std::atomic<std::int64_t> g_first_generation{-1};
pid_t g_first_pid = 0;

// Runs at exit() before the static destructors registered earlier (RocksDB's among them). In a
// forked child they would join threads that only exist in the parent: flush stdio and leave.
void exit_in_forked_child(int status, void*) {
  if (::getpid() != g_first_pid) {
    std::fflush(nullptr);
    ::_exit(status);
  }
}

void note_first_open() {
  std::int64_t expected = -1;
  const auto gen = static_cast<std::int64_t>(util::fork_generation());
  if (!g_first_generation.compare_exchange_strong(expected, gen)) return;
  g_first_pid = ::getpid();
  ::on_exit(exit_in_forked_child, nullptr);
}

}  // namespace

bool rocksdb_usable(std::string* why) {
  const std::int64_t first = g_first_generation.load();
  if (first < 0 || first == static_cast<std::int64_t>(util::fork_generation())) return true;
  if (why != nullptr)
    *why =
        "RocksDB cannot run in a child forked (without exec) from a process that had a store "
        "open: its background threads do not survive fork()";
  return false;
}

Status open_rocks_kv(const std::filesystem::path& dir, const RocksOptions& options,
                     std::unique_ptr<Kv>* out) {
  if (std::string why; !rocksdb_usable(&why)) return {Code::io_error, why};
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = !options.read_only;
  db_options.create_missing_column_families = !options.read_only;
  db_options.max_total_wal_size = options.max_total_wal_size;
  db_options.keep_log_file_num = 3;
  db_options.max_open_files = 512;
  db_options.skip_stats_update_on_db_open = true;
  db_options.avoid_flush_during_shutdown = false;
  // After a crash, keep replayed WAL data in the memtables instead of writing L0 files first:
  // a shared cache's takeover waits for this open.
  db_options.avoid_flush_during_recovery = true;
  db_options.db_write_buffer_size = 64 * 1024 * 1024;
  db_options.max_background_jobs = 2;
  // No info LOG file: RocksDB asserted (and aborted the host) writing it on a full disk.
  db_options.info_log = std::make_shared<ForwardLogger>(options.log, options.on_data_loss);

  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  const auto merge_operator = std::make_shared<OrByteOperator>();
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (int i = 0; i < kCfCount; ++i) {
    rocksdb::ColumnFamilyOptions cf;
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = cache;
    table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    // Index and filter blocks are charged to the block cache (memory stays bounded), in
    // partitions of metadata_block_size with a small top level pinned. An SST's whole index
    // block (~400 KB for a 64 MB file of 4 KB blocks) is larger than one shard of the cache
    // (32 MiB / 64 shards): it was dropped as soon as it was used, so every get of a reopened
    // store read and decompressed it again (2-3 % of raw RocksDB's gets, docs/performance.md).
    table.index_type = rocksdb::BlockBasedTableOptions::IndexType::kTwoLevelIndexSearch;
    table.partition_filters = true;
    table.metadata_block_size = 4096;
    table.cache_index_and_filter_blocks = true;
    table.cache_index_and_filter_blocks_with_high_priority = true;
    table.pin_top_level_index_and_filter = true;
    table.pin_l0_filter_and_index_blocks_in_cache = true;
    cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    cf.merge_operator = merge_operator;
    const auto which = static_cast<Cf>(i);
    cf.write_buffer_size = which == Cf::entries ? 32 * 1024 * 1024 : 8 * 1024 * 1024;
    if (which == Cf::entries && options.drop_entry)
      cf.compaction_filter_factory = std::make_shared<DropFilterFactory>(options.drop_entry);
    if (which == Cf::order || which == Cf::expiry || which == Cf::entries)
      cf.table_properties_collector_factories.push_back(
          rocksdb::NewCompactOnDeletionCollectorFactory(1024, 512, 0.5));
    descriptors.emplace_back(kCfNames[static_cast<std::size_t>(i)], cf);
  }
  OpenSpec spec{dir.string(), db_options, std::move(descriptors), options.read_only};
  std::optional<OpenStores::Id> claimed;
  if (struct stat st{}; !options.read_only && ::stat(dir.c_str(), &st) == 0) {
    if (!OpenStores::claim({st.st_dev, st.st_ino}))
      return {Code::io_error,
              fmt::format("lock {}/LOCK: the store is already open in this process", dir.string())};
    claimed = OpenStores::Id{st.st_dev, st.st_ino};
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  const rocksdb::Status s = open_db(spec, &db, &handles);
  if (!s.ok() && claimed) OpenStores::release(*claimed);
  if (!s.ok()) {
    Status st = from_rocks(s);
    if (st.code == Code::not_found) st.code = Code::io_error;
    // A damaged MANIFEST or CURRENT sometimes surfaces as InvalidArgument / NotSupported.
    if (!options.read_only && (s.IsInvalidArgument() || s.IsNotSupported()))
      st.code = Code::corruption;
    // CURRENT naming a MANIFEST (or a MANIFEST naming a file) that does not exist: the store's
    // files are inconsistent, which no retry mends.
    if (!options.read_only && s.IsPathNotFound() && std::filesystem::exists(dir / "CURRENT"))
      st.code = Code::corruption;
    if (st.message.empty()) st.message = s.ToString();
    return st;
  }
  *out = std::make_unique<RocksKv>(std::move(spec), db, std::move(handles), claimed);
  note_first_open();  // after RocksDB's statics exist, so that the hook runs before them
  return Status();
}

}  // namespace larder::kv
