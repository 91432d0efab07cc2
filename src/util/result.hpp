// The error convention of larder's internal functions. A fallible function returns a Status (it
// worked, or a message naming what failed) or a Result<T> (the value, or that message); both are
// [[nodiscard]], so a failure cannot be dropped by accident (write `(void)` where ignoring it is
// the decision). Messages are written for a person reading a log: they name the file, the step
// and the system's reason ("open /x/db: Permission denied").
//
//   util::Status save(...) { if (bad) return util::fail("write {}: {}", ...); return {}; }
//   util::Result<std::string> load(...) { ...; return content; }
//   if (auto r = load(p); !r) log(r.error()); else use(*r);
//
// The storage interface (kv::Status) keeps its own type: it also carries the kind of failure
// (not found, I/O error, corruption) that the engine acts on.
//
// Thread-safety: values; no shared state.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace larder::util {

// A failure on its way into a Status or a Result<T> of any T.
struct Failure {
  std::string message;
};

// A failure with the message `message`.
inline Failure fail(std::string message) {
  return Failure{std::move(message)};
}
// A failure with a message formatted as fmt::format does.
template <class... Args>
Failure fail(fmt::format_string<Args...> format, Args&&... args) {
  return Failure{fmt::format(format, std::forward<Args>(args)...)};
}

class [[nodiscard]] Status {
 public:
  Status() = default;                                                 // success
  Status(Failure f) : failed_(true), error_(std::move(f.message)) {}  // NOLINT: implicit on purpose

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  // What failed; empty on success.
  const std::string& error() const { return error_; }

 private:
  bool failed_ = false;
  std::string error_;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}        // NOLINT: implicit on purpose
  Result(Failure f) : error_(std::move(f.message)) {}  // NOLINT: implicit on purpose

  bool ok() const { return value_.has_value(); }
  explicit operator bool() const { return ok(); }
  // What failed; empty on success.
  const std::string& error() const { return error_; }
  // The value; only when ok().
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  // The failure as a Status (to pass on a Result's error from a function returning Status).
  Status status() const { return ok() ? Status() : Status(Failure{error_}); }

 private:
  std::optional<T> value_;
  std::string error_;
};

}  // namespace larder::util
