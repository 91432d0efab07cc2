// Service's shared parts: the default batch calls (one call per item), the single-flight table
// of get_or_compute, and the namespaces' counters.
#include "core/service.hpp"

namespace larder::core {

std::vector<std::optional<std::string>> Service::get_many(const std::vector<std::string>& keys) {
  std::vector<std::optional<std::string>> out;
  out.reserve(keys.size());
  for (const auto& k : keys) out.push_back(get(k));
  return out;
}

std::vector<bool> Service::set_many(const std::vector<SetRequest>& requests) {
  std::vector<bool> out;
  out.reserve(requests.size());
  for (const auto& r : requests) out.push_back(set(r));
  return out;
}

std::shared_ptr<Service::Flight> Service::join_flight(std::string_view key, bool* leader) {
  std::shared_ptr<Flight> flight;
  {
    std::lock_guard lock(flights_mu_);
    auto [it, inserted] = flights_.try_emplace(std::string(key));
    if (inserted)
      it->second = std::make_shared<Flight>();
    else
      ++it->second->followers;
    *leader = inserted;
    flight = it->second;
  }
  if (!*leader) joined_.notify_all();
  return flight;
}

stats::Counters& Service::ns_counters(std::string_view name) {
  std::lock_guard lock(ns_mu_);
  auto it = ns_counters_.find(name);
  if (it == ns_counters_.end())
    it = ns_counters_.emplace(std::string(name), std::make_unique<stats::Counters>()).first;
  return *it->second;
}

void Service::end_flight(std::string_view key) {
  std::lock_guard lock(flights_mu_);
  flights_.erase(std::string(key));
}

bool Service::await_followers(std::string_view key, std::size_t n,
                              std::chrono::milliseconds timeout) {
  const std::string k(key);
  std::unique_lock lock(flights_mu_);
  return joined_.wait_for(lock, timeout, [&] {
    const auto it = flights_.find(k);
    return it != flights_.end() && it->second->followers >= n;
  });
}

}  // namespace larder::core
