#include "kv/rocks_kv.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "util/fork.hpp"

#include <rocksdb/cache.h>
#include <rocksdb/compaction_filter.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_batch.h>

#include <array>
#include <vector>

namespace larder::kv {

namespace {

constexpr std::array<const char*, kCfCount> kCfNames = {"entries", "access",   "order",
                                                        "expiry",  "category", "counters"};

Status from_rocks(const rocksdb::Status& s) {
  if (s.ok()) return Status::Ok();
  if (s.IsNotFound()) return Status::NotFound();
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

class RocksBatch final : public Batch {
 public:
  RocksBatch(const std::vector<rocksdb::ColumnFamilyHandle*>* cfs) : cfs_(cfs) {}
  void put(Cf cf, std::string_view key, std::string_view value) override {
    batch.Put(h(cf), slice(key), slice(value));
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
  std::size_t count() const override { return batch.Count(); }
  rocksdb::WriteBatch batch;

 private:
  rocksdb::ColumnFamilyHandle* h(Cf cf) const { return (*cfs_)[static_cast<int>(cf)]; }
  const std::vector<rocksdb::ColumnFamilyHandle*>* cfs_;
};

class RocksKv final : public Kv {
 public:
  RocksKv(rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> handles, bool read_only)
      : db_(db), read_only_(read_only) {
    // handles[0] is "default"; ours follow in kCfNames order.
    default_ = handles[0];
    cfs_.assign(handles.begin() + 1, handles.end());
  }

  ~RocksKv() override {
    if (!read_only_) {
      rocksdb::FlushOptions fo;
      fo.wait = true;
      std::vector<rocksdb::ColumnFamilyHandle*> all = cfs_;
      db_->Flush(fo, all);
      db_->SyncWAL();
    }
    for (auto* h : cfs_) db_->DestroyColumnFamilyHandle(h);
    db_->DestroyColumnFamilyHandle(default_);
    db_->Close();
    delete db_;
  }

  Status get(Cf cf, std::string_view key, std::string* value) override {
    return from_rocks(db_->Get(rocksdb::ReadOptions(), h(cf), slice(key), value));
  }

  Status scan(Cf cf, std::string_view begin, std::string_view end, const ScanFn& fn) override {
    rocksdb::ReadOptions ro;
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
    if (read_only_) return {Code::io_error, "store opened read-only"};
    return from_rocks(db_->Write(rocksdb::WriteOptions(), &static_cast<RocksBatch&>(batch).batch));
  }

  Status flush() override {
    if (read_only_) return Status::Ok();
    rocksdb::FlushOptions fo;
    fo.wait = true;
    return from_rocks(db_->Flush(fo, cfs_));
  }

  Status compact(Cf cf) override {
    if (read_only_) return {Code::io_error, "store opened read-only"};
    rocksdb::CompactRangeOptions co;
    co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    return from_rocks(db_->CompactRange(co, h(cf), nullptr, nullptr));
  }

 private:
  rocksdb::ColumnFamilyHandle* h(Cf cf) const { return cfs_[static_cast<int>(cf)]; }
  rocksdb::DB* db_;
  rocksdb::ColumnFamilyHandle* default_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
  bool read_only_;
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

  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (int i = 0; i < kCfCount; ++i) {
    rocksdb::ColumnFamilyOptions cf;
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = cache;
    table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    table.cache_index_and_filter_blocks = true;
    table.pin_l0_filter_and_index_blocks_in_cache = true;
    cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    const auto which = static_cast<Cf>(i);
    cf.write_buffer_size = which == Cf::entries ? 32 * 1024 * 1024 : 8 * 1024 * 1024;
    if (which == Cf::entries && options.drop_entry)
      cf.compaction_filter_factory = std::make_shared<DropFilterFactory>(options.drop_entry);
    if (which == Cf::order || which == Cf::expiry || which == Cf::entries)
      cf.table_properties_collector_factories.push_back(
          rocksdb::NewCompactOnDeletionCollectorFactory(1024, 512, 0.5));
    descriptors.emplace_back(kCfNames[static_cast<std::size_t>(i)], cf);
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s;
  if (options.read_only) {
    s = rocksdb::DB::OpenForReadOnly(db_options, dir.string(), descriptors, &handles, &db);
  } else {
    s = rocksdb::DB::Open(db_options, dir.string(), descriptors, &handles, &db);
  }
  if (!s.ok()) {
    Status st = from_rocks(s);
    if (st.code == Code::not_found) st.code = Code::io_error;
    // A damaged MANIFEST or CURRENT sometimes surfaces as InvalidArgument / NotSupported.
    if (!options.read_only && (s.IsInvalidArgument() || s.IsNotSupported()))
      st.code = Code::corruption;
    if (st.message.empty()) st.message = s.ToString();
    return st;
  }
  *out = std::make_unique<RocksKv>(db, std::move(handles), options.read_only);
  note_first_open();  // after RocksDB's statics exist, so that the hook runs before them
  return Status::Ok();
}

}  // namespace larder::kv
