// The keys a Cache signs and checks values with whose decoding would run code (the Python
// module's pickles, docs/python.md "Security"): the remote tier's shared secret (secret_file)
// and the cache's own key, kept in <cache_root>/value.key (32 random bytes, created on first
// use with mode 0600, never sent anywhere). A disabled cache, or one whose key file cannot be
// read or made, uses a key that lives in this process only (logged): what it signs is then
// readable by this process alone.
//
// Thread-safety: every function may be called from many threads at once.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace larder::api {

class ValueSigner {
 public:
  using Log = std::function<void(std::string_view)>;
  // `key_file`: where the cache's own key lives (empty: in memory only). `shared_secret`: the
  // remote tier's secret (empty: none). `warn` receives the one line said when the key file
  // cannot be used.
  ValueSigner(std::filesystem::path key_file, std::string shared_secret, Log warn);

  // The 32-byte tag of `bytes`: under the shared secret when there is one (machines with the
  // same secret_file accept it), else under the cache's own key.
  std::string tag(std::string_view bytes);
  // True when `tag` is the tag of `bytes` under the shared secret or the cache's own key.
  bool valid(std::string_view bytes, std::string_view tag);
  bool has_shared_secret() const { return !shared_.empty(); }
  // True the first time only (for a message said once per cache).
  bool first_report() { return !reported_.exchange(true); }

 private:
  const std::string& own_key();

  const std::filesystem::path key_file_;
  const std::string shared_;
  const Log warn_;
  std::once_flag loaded_;
  std::string own_;
  std::atomic<bool> reported_{false};
};

// Reads the 32-byte key at `path`, creating it (mode 0600, atomically: written aside, then
// linked into place) when there is none. An error message naming the file when it is not a
// regular file of 32 bytes owned by this user with no group or other access, or cannot be made.
std::string load_or_create_key(const std::filesystem::path& path, std::string* error);

}  // namespace larder::api
