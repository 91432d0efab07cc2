// larder._larder: the Python extension over the public C++ API (larder/larder.hpp only). The
// Python package (larder/__init__.py) builds the diskcache-style API on top: value kinds, pickle,
// memoize, fork handling. Every call into the cache releases the GIL while it runs in C++; the
// log callback takes the GIL to call Python.
//
// Thread-safety: as larder::Cache (every method may be called from many threads at once); the
// wrapper's own state (the open cache, closed flag) is guarded by a mutex.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "larder/larder.hpp"

namespace py = pybind11;
using namespace std::chrono;

namespace {

// A clock the tests (and users) move by hand: seconds since the epoch, as a double.
struct ManualClock {
  std::shared_ptr<std::atomic<std::int64_t>> ns = std::make_shared<std::atomic<std::int64_t>>(
      duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count());
  double now() const { return static_cast<double>(ns->load()) / 1e9; }
  void set(double seconds) { ns->store(static_cast<std::int64_t>(std::llround(seconds * 1e9))); }
  void advance(double seconds) {
    ns->fetch_add(static_cast<std::int64_t>(std::llround(seconds * 1e9)));
  }
};

larder::Strategy strategy_of(const std::string& s) {
  if (s == "process_isolated") return larder::Strategy::process_isolated;
  if (s == "shared") return larder::Strategy::shared;
  if (s == "disabled") return larder::Strategy::disabled;
  throw larder::ConfigError("strategy: unknown strategy '" + s +
                            "' (expected process_isolated, shared or disabled)");
}

larder::EvictionPolicy policy_of(const std::string& s) {
  if (s == "lru") return larder::EvictionPolicy::lru;
  if (s == "lfu") return larder::EvictionPolicy::lfu;
  if (s == "fifo") return larder::EvictionPolicy::fifo;
  if (s == "ttl") return larder::EvictionPolicy::ttl;
  if (s == "s3fifo") return larder::EvictionPolicy::s3fifo;
  throw larder::ConfigError("eviction_policy: unknown policy '" + s +
                            "' (expected lru, lfu, fifo, ttl or s3fifo)");
}

const char* status_name(larder::EntryStatus s) {
  switch (s) {
    case larder::EntryStatus::fresh:
      return "fresh";
    case larder::EntryStatus::stale:
      return "stale";
    case larder::EntryStatus::expired:
      return "expired";
    case larder::EntryStatus::invalid:
      return "invalid";
  }
  return "unknown";
}

double epoch_seconds(system_clock::time_point t) {
  return duration<double>(t.time_since_epoch()).count();
}

std::int64_t whole(const char* field, double v, double max) {
  if (!std::isfinite(v) || v < 0 || v > max)
    throw larder::ConfigError(std::string(field) + ": must be a number from 0 to " +
                              std::to_string(static_cast<std::int64_t>(max)));
  return static_cast<std::int64_t>(v);
}

// A TTL in seconds as whole seconds, rounded up: a positive TTL below a second is one second, never
// 0 ("never expires", which 0.5 truncated to). Until TTLs are kept in milliseconds, a TTL lasts
// at most a second longer than asked, never shorter.
// A ttl in float seconds, exact to the millisecond (larder::ttl_from_seconds: a positive value
// below 1 ms is 1 ms). ConfigError (a ValueError) for NaN, infinity, negatives and > 1e12.
std::chrono::milliseconds ttl_of(const char* field, double v) {
  const auto ms = larder::ttl_from_seconds(v);
  if (!ms)
    throw larder::ConfigError(std::string(field) + ": must be a number of seconds from 0 to 1e12");
  return *ms;
}

// The log callback: a Python callable, called with the GIL taken, never during interpreter
// shutdown; what it raises is printed as unraisable and otherwise ignored.
struct PyLog {
  explicit PyLog(py::object f) : fn(new py::object(std::move(f))) {}
  ~PyLog() {
    if (!Py_IsInitialized()) {
      (void)fn.release();  // the interpreter is gone: leak it
      return;
    }
    py::gil_scoped_acquire gil;
    fn.reset();
  }
  void operator()(larder::LogLevel level, std::string_view message) const {
    if (!Py_IsInitialized() || _Py_IsFinalizing()) return;
    py::gil_scoped_acquire gil;
    static const char* names[] = {"debug", "info", "warning", "error"};
    try {
      (*fn)(names[static_cast<int>(level) & 3], py::str(message.data(), message.size()));
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("larder log callback");
    }
  }
  std::unique_ptr<py::object> fn;
};

struct EntryData {
  py::bytes value;
  std::string key, category, status;
  std::uint64_t size = 0, access_count = 0;
  double created_at = 0, last_accessed = 0;
  std::optional<double> expires_at;
  std::map<std::string, std::string> metadata;
};

class PyCache {
 public:
  PyCache(std::optional<std::filesystem::path> directory, const std::string& strategy,
          std::uint64_t max_entries, std::uint64_t max_size, double default_ttl,
          const std::string& eviction_policy, double cleanup_interval, double lock_timeout,
          double stale_factor, bool statistics, std::optional<ManualClock> clock, py::object log,
          bool read_only, const std::string& remote) {
    larder::Config c;
    c.read_only = read_only;
    c.remote = remote;
    if (directory) c.cache_root = *directory;
    c.strategy = strategy_of(strategy);
    c.max_entries = max_entries;
    c.max_size_bytes = max_size;
    c.default_ttl = ttl_of("default_ttl", default_ttl);
    c.eviction_policy = policy_of(eviction_policy);
    c.cleanup_interval = seconds(whole("cleanup_interval", cleanup_interval, 1e12));
    if (!std::isfinite(lock_timeout) || lock_timeout < 0 || lock_timeout > 1e9)
      throw larder::ConfigError("lock_timeout: must be a number of seconds from 0 to 1e9");
    c.lock_timeout = milliseconds(static_cast<std::int64_t>(lock_timeout * 1000));
    c.stale_factor = stale_factor;
    c.enable_statistics = statistics;
    if (clock) {
      auto ns = clock->ns;
      c.clock = [ns] {
        return system_clock::time_point(
            duration_cast<system_clock::duration>(nanoseconds(ns->load())));
      };
    }
    if (!log.is_none()) {
      auto sink = std::make_shared<PyLog>(std::move(log));
      c.log = [sink](larder::LogLevel l, std::string_view m) { (*sink)(l, m); };
    }
    py::gil_scoped_release release;
    cache_ = std::make_unique<larder::Cache>(larder::Cache::open(c));
  }

  ~PyCache() { close(); }

  // Closes the cache (flushing it), after the calls in flight return. The GIL is released
  // before any lock is taken: a call in flight takes the GIL back while it holds its lock.
  void close() {
    py::gil_scoped_release release;
    std::unique_ptr<larder::Cache> doomed;
    {
      std::unique_lock lock(mu_);
      doomed = std::move(cache_);
      closed_.store(true);
    }
    doomed.reset();  // flushes; may wait for the housekeeping thread
  }

  // Leaves the C++ cache to the process that opened it: a forked child must not close its
  // parent's store, lock or threads (the object is leaked on purpose). Called in the child
  // right after fork, when it has one thread.
  void abandon() {
    (void)cache_.release();
    closed_.store(true);
  }

  bool closed() const { return closed_.load(); }

  // Runs `f` on the open cache with the GIL released; raises ValueError once closed.
  template <class F>
  auto with(F&& f) {
    if (closed_.load()) throw py::value_error("the cache is closed");
    std::optional<decltype(f(std::declval<larder::Cache&>()))> out;
    {
      py::gil_scoped_release release;
      std::shared_lock lock(mu_);
      if (cache_) out.emplace(f(*cache_));
    }
    if (!out) throw py::value_error("the cache is closed");
    return std::move(*out);
  }

  bool set(const std::string& key, const std::string& value, std::optional<double> ttl,
           const std::string& category, const std::map<std::string, std::string>& metadata) {
    larder::SetOptions o;
    if (ttl) o.ttl = ttl_of("expire", *ttl);
    o.category = category;
    o.metadata = metadata;
    return with([&](larder::Cache& c) { return c.set(key, value, o); });
  }

  py::object get_entry(const std::string& key, bool include_stale) {
    auto e = with([&](larder::Cache& c) { return c.get_entry(key, include_stale); });
    if (!e) return py::none();
    return py::cast(to_data(std::move(*e)));
  }

  // (value, kind) of a fresh entry (or any stored one with include_stale), kind being the
  // metadata field `kind_key` or None; None on a miss. The lean path of larder.Cache.get.
  py::object get_value(const std::string& key, bool include_stale, const std::string& kind_key) {
    auto e = with([&](larder::Cache& c) { return c.get_entry(key, include_stale); });
    if (!e) return py::none();
    const auto it = e->info.metadata.find(kind_key);
    py::object kind = it == e->info.metadata.end() ? py::object(py::none()) : py::str(it->second);
    return py::make_tuple(py::bytes(e->value), std::move(kind));
  }

  py::object get(const std::string& key) {
    auto v = with([&](larder::Cache& c) { return c.get(key); });
    if (!v) return py::none();
    return py::bytes(*v);
  }

  py::object metadata(const std::string& key) {
    auto info = with([&](larder::Cache& c) { return c.metadata(key); });
    if (!info) return py::none();
    larder::Entry e;
    e.info = std::move(*info);
    return py::cast(to_data(std::move(e)));
  }

  std::vector<py::object> get_many(const std::vector<std::string>& keys) {
    auto values = with([&](larder::Cache& c) { return c.get_many(keys); });
    std::vector<py::object> out;
    out.reserve(values.size());
    for (auto& v : values) out.push_back(v ? py::object(py::bytes(*v)) : py::object(py::none()));
    return out;
  }

  static larder::SetOptions options(std::optional<double> ttl, const std::string& category,
                                    const std::map<std::string, std::string>& metadata) {
    larder::SetOptions o;
    if (ttl) o.ttl = ttl_of("expire", *ttl);
    o.category = category;
    o.metadata = metadata;
    return o;
  }

  std::vector<bool> set_many(const std::vector<std::pair<std::string, std::string>>& items,
                             std::optional<double> ttl, const std::string& category,
                             const std::map<std::string, std::string>& metadata) {
    const larder::SetOptions o = options(ttl, category, metadata);
    return with([&](larder::Cache& c) { return c.set_many(items, o); });
  }

  bool add(const std::string& key, const std::string& value, std::optional<double> ttl,
           const std::string& category, const std::map<std::string, std::string>& metadata) {
    const larder::SetOptions o = options(ttl, category, metadata);
    return with([&](larder::Cache& c) { return c.add(key, value, o); });
  }

  bool compare_and_set(const std::string& key, const std::string& expected,
                       const std::string& value, std::optional<double> ttl,
                       const std::string& category,
                       const std::map<std::string, std::string>& metadata) {
    const larder::SetOptions o = options(ttl, category, metadata);
    return with([&](larder::Cache& c) { return c.compare_and_set(key, expected, value, o); });
  }

  // get_and_touch: (value bytes, kind) or None, as get_value.
  py::object get_and_touch(const std::string& key, double ttl, const std::string& kind_key) {
    const auto t = ttl_of("expire", ttl);
    auto e = with([&](larder::Cache& c) { return c.get_entry_and_touch(key, t); });
    if (!e) return py::none();
    const auto it = e->info.metadata.find(kind_key);
    py::object kind = it == e->info.metadata.end() ? py::object(py::none()) : py::str(it->second);
    return py::make_tuple(py::bytes(e->value), std::move(kind));
  }

  bool touch(const std::string& key, double ttl) {
    const auto t = ttl_of("expire", ttl);
    return with([&](larder::Cache& c) { return c.touch(key, t); });
  }

  std::optional<std::int64_t> incr(const std::string& key, std::int64_t delta,
                                   std::optional<double> ttl, const std::string& category,
                                   const std::map<std::string, std::string>& metadata) {
    const larder::SetOptions o = options(ttl, category, metadata);
    return with([&](larder::Cache& c) { return c.incr(key, delta, o); });
  }

  bool set_all(const std::vector<std::pair<std::string, std::string>>& items,
               std::optional<double> ttl, const std::string& category,
               const std::map<std::string, std::string>& metadata) {
    const larder::SetOptions o = options(ttl, category, metadata);
    return with([&](larder::Cache& c) { return c.set_all(items, o); });
  }

  py::dict stats() {
    const larder::Stats s = with([](larder::Cache& c) { return c.stats(); });
    py::dict d;
    d["hit_count"] = s.hit_count;
    d["miss_count"] = s.miss_count;
    d["set_count"] = s.set_count;
    d["delete_count"] = s.delete_count;
    d["eviction_count"] = s.eviction_count;
    d["expiration_count"] = s.expiration_count;
    d["invalidation_count"] = s.invalidation_count;
    d["error_count"] = s.error_count;
    d["cleanup_count"] = s.cleanup_count;
    d["remote_hit_count"] = s.remote_hit_count;
    d["remote_miss_count"] = s.remote_miss_count;
    d["remote_error_count"] = s.remote_error_count;
    d["total_entries"] = s.total_entries;
    d["total_size_bytes"] = s.total_size_bytes;
    d["fresh_entries"] = s.fresh_entries;
    d["stale_entries"] = s.stale_entries;
    d["expired_entries"] = s.expired_entries;
    d["invalid_entries"] = s.invalid_entries;
    d["categories"] = s.categories;
    d["hit_rate"] = s.hit_rate();
    d["miss_rate"] = s.miss_rate();
    return d;
  }

 private:
  static EntryData to_data(larder::Entry e) {
    EntryData d;
    d.value = py::bytes(e.value);
    d.key = std::move(e.info.key);
    d.category = std::move(e.info.category);
    d.status = status_name(e.info.status);
    d.size = e.info.size_bytes;
    d.access_count = e.info.access_count;
    d.created_at = epoch_seconds(e.info.created_at);
    d.last_accessed = epoch_seconds(e.info.last_accessed);
    if (e.info.expires_at) d.expires_at = epoch_seconds(*e.info.expires_at);
    d.metadata = std::move(e.info.metadata);
    return d;
  }

  mutable std::shared_mutex mu_;
  std::unique_ptr<larder::Cache> cache_;
  std::atomic<bool> closed_{false};
};

}  // namespace

PYBIND11_MODULE(_larder, m) {
  m.doc() = "larder's C++ core (use the larder package, not this module)";
  py::register_exception<larder::ConfigError>(m, "ConfigError", PyExc_ValueError);

  py::class_<ManualClock>(m, "ManualClock",
                          "A clock moved by hand (seconds since the epoch), for tests of TTLs.")
      .def(py::init([](std::optional<double> start) {
             ManualClock c;
             if (start) c.set(*start);
             return c;
           }),
           py::arg("start") = py::none())
      .def("now", &ManualClock::now, "The clock's time, in seconds since the epoch.")
      .def("set", &ManualClock::set, py::arg("seconds"), "Sets the time (seconds since the epoch).")
      .def("advance", &ManualClock::advance, py::arg("seconds"), "Moves the time forward.");

  py::class_<EntryData>(m, "EntryData")
      .def_readonly("value", &EntryData::value)
      .def_readonly("key", &EntryData::key)
      .def_readonly("category", &EntryData::category)
      .def_readonly("status", &EntryData::status)
      .def_readonly("size", &EntryData::size)
      .def_readonly("access_count", &EntryData::access_count)
      .def_readonly("created_at", &EntryData::created_at)
      .def_readonly("last_accessed", &EntryData::last_accessed)
      .def_readonly("expires_at", &EntryData::expires_at)
      .def_readonly("metadata", &EntryData::metadata);

  using K = const std::string&;
  py::class_<PyCache>(m, "Cache")
      .def(py::init<std::optional<std::filesystem::path>, const std::string&, std::uint64_t,
                    std::uint64_t, double, const std::string&, double, double, double, bool,
                    std::optional<ManualClock>, py::object, bool, const std::string&>(),
           py::arg("directory"), py::arg("strategy"), py::arg("max_entries"), py::arg("max_size"),
           py::arg("default_ttl"), py::arg("eviction_policy"), py::arg("cleanup_interval"),
           py::arg("lock_timeout"), py::arg("stale_factor"), py::arg("statistics"),
           py::arg("clock"), py::arg("log"), py::arg("read_only"), py::arg("remote"))
      .def("close", &PyCache::close)
      .def("abandon", &PyCache::abandon)
      .def_property_readonly("closed", &PyCache::closed)
      .def("set", &PyCache::set, py::arg("key"), py::arg("value"), py::arg("ttl"),
           py::arg("category"), py::arg("metadata"))
      .def("get", &PyCache::get, py::arg("key"))
      .def("get_value", &PyCache::get_value, py::arg("key"), py::arg("include_stale"),
           py::arg("kind_key"))
      .def("get_entry", &PyCache::get_entry, py::arg("key"), py::arg("include_stale"))
      .def("metadata", &PyCache::metadata, py::arg("key"))
      .def("get_many", &PyCache::get_many, py::arg("keys"))
      .def("set_many", &PyCache::set_many, py::arg("items"), py::arg("ttl"), py::arg("category"),
           py::arg("metadata"))
      .def("add", &PyCache::add, py::arg("key"), py::arg("value"), py::arg("ttl"),
           py::arg("category"), py::arg("metadata"))
      .def("touch", &PyCache::touch, py::arg("key"), py::arg("ttl"))
      .def("compare_and_set", &PyCache::compare_and_set, py::arg("key"), py::arg("expected"),
           py::arg("value"), py::arg("ttl"), py::arg("category"), py::arg("metadata"))
      .def("get_and_touch", &PyCache::get_and_touch, py::arg("key"), py::arg("ttl"),
           py::arg("kind_key"))
      .def("incr", &PyCache::incr, py::arg("key"), py::arg("delta"), py::arg("ttl"),
           py::arg("category"), py::arg("metadata"))
      .def("set_all", &PyCache::set_all, py::arg("items"), py::arg("ttl"), py::arg("category"),
           py::arg("metadata"))
      .def("exists",
           [](PyCache& p, K k) { return p.with([&](larder::Cache& c) { return c.exists(k); }); })
      .def("remove",
           [](PyCache& p, K k) { return p.with([&](larder::Cache& c) { return c.remove(k); }); })
      .def(
          "invalidate",
          [](PyCache& p, K k) { return p.with([&](larder::Cache& c) { return c.invalidate(k); }); })
      .def("invalidate_category",
           [](PyCache& p, K k) {
             return p.with([&](larder::Cache& c) { return c.invalidate_category(k); });
           })
      .def("invalidate_pattern",
           [](PyCache& p, K k) {
             return p.with([&](larder::Cache& c) { return c.invalidate_pattern(k); });
           })
      .def("clear", [](PyCache& p) { return p.with([](larder::Cache& c) { return c.clear(); }); })
      .def("clear_category",
           [](PyCache& p, K k) {
             return p.with([&](larder::Cache& c) { return c.clear_category(k); });
           })
      .def("cleanup",
           [](PyCache& p) { return p.with([](larder::Cache& c) { return c.cleanup(); }); })
      .def("keys", [](PyCache& p) { return p.with([](larder::Cache& c) { return c.keys(); }); })
      .def("keys_in_category",
           [](PyCache& p, K k) {
             return p.with([&](larder::Cache& c) { return c.keys_in_category(k); });
           })
      .def("flush",
           [](PyCache& p) {
             p.with([](larder::Cache& c) {
               c.flush();
               return true;
             });
           })
      .def("stats", &PyCache::stats)
      // Signing of pickles (docs/python.md, "Security"): the tag is 32 bytes.
      .def("value_tag",
           [](PyCache& p, const py::bytes& data) {
             const std::string bytes = data;
             return py::bytes(p.with([&](larder::Cache& c) { return c.value_tag(bytes); }));
           })
      .def("value_tag_valid",
           [](PyCache& p, const py::bytes& data, const py::bytes& tag) {
             const std::string bytes = data, t = tag;
             return p.with([&](larder::Cache& c) { return c.value_tag_valid(bytes, t); });
           })
      .def("report_untrusted_value",
           [](PyCache& p, K key, K why) {
             return p.with([&](larder::Cache& c) {
               c.report_untrusted_value(key, why);
               return true;
             });
           })
      .def_property_readonly(
          "degraded",
          [](PyCache& p) { return p.with([](larder::Cache& c) { return c.degraded(); }); })
      .def_property_readonly(
          "last_error",
          [](PyCache& p) { return p.with([](larder::Cache& c) { return c.last_error(); }); })
      .def_property_readonly("directory", [](PyCache& p) {
        return p.with([](larder::Cache& c) { return c.directory(); });
      });

  m.def("env_config", [] {
    // Config::from_env, as keyword arguments of larder.Cache.
    const larder::Config c = larder::Config::from_env();
    py::dict d;
    d["directory"] =
        c.cache_root.empty() ? py::object(py::none()) : py::cast(c.cache_root.string());
    d["strategy"] = c.strategy == larder::Strategy::shared     ? "shared"
                    : c.strategy == larder::Strategy::disabled ? "disabled"
                                                               : "process_isolated";
    d["max_entries"] = c.max_entries;
    d["max_size"] = c.max_size_bytes;
    d["default_ttl"] = static_cast<double>(c.default_ttl.count()) / 1000.0;
    const char* policies[] = {"lru", "lfu", "fifo", "ttl", "s3fifo"};
    const auto p = static_cast<std::size_t>(c.eviction_policy);
    d["eviction_policy"] = p < std::size(policies) ? policies[p] : "unknown";
    if (!c.remote.empty()) d["remote"] = c.remote;
    return d;
  });
  m.def("key_from_parts", [](const std::vector<std::string>& parts) {
    // CacheKey::from_parts takes an initializer list; join the same way part by part.
    std::string out;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (i > 0) out += ':';
      out += larder::CacheKey::from_parts({parts[i]});
    }
    return out;
  });
  m.def("key_from_map", [](const std::map<std::string, std::string>& fields) {
    return larder::CacheKey::from_map(fields);
  });
  m.def("key_from_path",
        [](const std::filesystem::path& p) { return larder::CacheKey::from_path(p); });
}
