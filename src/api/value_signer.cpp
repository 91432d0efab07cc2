#include "api/value_signer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "util/hmac.hpp"

namespace larder::api {

namespace {

constexpr std::string_view kValueDomain{"larder.value.v1\0", 16};

bool read_exact(int fd, std::string* out, std::size_t n) {
  out->assign(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, out->data() + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    got += static_cast<std::size_t>(r);
  }
  return true;
}

// The key in an existing file; empty with *error set when it is not acceptable.
std::string read_key(int fd, const std::filesystem::path& path, std::string* error) {
  struct stat st {};
  std::string key;
  if (::fstat(fd, &st) != 0) {
    *error = fmt::format("{}: {}", path.string(), std::strerror(errno));
  } else if (!S_ISREG(st.st_mode) || st.st_size != static_cast<off_t>(util::kTagBytes)) {
    *error = fmt::format("{}: not a regular file of {} bytes", path.string(), util::kTagBytes);
  } else if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    *error = fmt::format("{}: must be owned by this user with mode 0600 (is uid {}, mode {:04o})",
                         path.string(), st.st_uid, st.st_mode & 07777);
  } else if (!read_exact(fd, &key, util::kTagBytes)) {
    *error = fmt::format("{}: short read", path.string());
    key.clear();
  }
  return key;
}

}  // namespace

std::string load_or_create_key(const std::filesystem::path& path, std::string* error) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd >= 0) {
      std::string key = read_key(fd, path, error);
      ::close(fd);
      return key;
    }
    if (errno != ENOENT) {
      *error = fmt::format("{}: {}", path.string(), std::strerror(errno));
      return {};
    }
    // Written aside and linked into place: a reader never sees a partial key, and of two
    // processes creating it at once one wins and both use its key.
    std::string key;
    try {
      key = util::random_bytes(util::kTagBytes);
    } catch (const std::exception& e) {
      *error = e.what();
      return {};
    }
    const std::filesystem::path aside =
        path.parent_path() / fmt::format(".value.key.{}.{}", ::getpid(), attempt);
    const int out =
        ::open(aside.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (out < 0) {
      *error = fmt::format("{}: {}", aside.string(), std::strerror(errno));
      return {};
    }
    const bool written = ::write(out, key.data(), key.size()) == static_cast<ssize_t>(key.size()) &&
                         ::fsync(out) == 0;
    ::close(out);
    const int linked = written ? ::link(aside.c_str(), path.c_str()) : -1;
    const int link_errno = errno;
    ::unlink(aside.c_str());
    if (linked == 0) return key;
    if (!written || link_errno != EEXIST) {
      *error = fmt::format("{}: {}", path.string(),
                           written ? std::strerror(link_errno) : "cannot be written");
      return {};
    }
    // Another process made it first: read theirs.
  }
  *error = fmt::format("{}: could not be read nor made", path.string());
  return {};
}

ValueSigner::ValueSigner(std::filesystem::path key_file, std::string shared_secret, Log warn)
    : key_file_(std::move(key_file)), shared_(std::move(shared_secret)), warn_(std::move(warn)) {}

const std::string& ValueSigner::own_key() {
  std::call_once(loaded_, [&] {
    std::string error;
    if (!key_file_.empty()) own_ = load_or_create_key(key_file_, &error);
    if (own_.empty()) {
      if (!key_file_.empty() && warn_)
        warn_(
            fmt::format("value signing key: {}; using a key of this process only (values it "
                        "signs are readable by this process alone)",
                        error));
      try {
        own_ = util::random_bytes(util::kTagBytes);
      } catch (const std::exception&) {
        own_.clear();  // nothing signs, nothing verifies: every signed value is a miss
      }
    }
  });
  return own_;
}

std::string ValueSigner::tag(std::string_view bytes) {
  return util::hmac_sha256(shared_.empty() ? own_key() : shared_, {kValueDomain, bytes});
}

bool ValueSigner::valid(std::string_view bytes, std::string_view tag) {
  if (!shared_.empty() && util::hmac_valid(shared_, {kValueDomain, bytes}, tag)) return true;
  return util::hmac_valid(own_key(), {kValueDomain, bytes}, tag);
}

}  // namespace larder::api
