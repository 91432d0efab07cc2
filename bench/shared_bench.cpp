// larder-shared-bench: the shared strategy measured against a bare Unix-socket echo round trip in
// the same run (same framing as larder's protocol, socket.hpp), plus the takeover gap after
// SIGKILL of the owner. Run by hand; prints a table of medians (see docs/performance.md).
// Usage: larder-shared-bench [--dir DIR] [--keys N] [--ops N] [--rounds R] [--kills K]
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "larder/larder.hpp"
#include "shared/socket.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
  fs::path dir;
  std::size_t keys = 10'000;
  std::size_t ops = 20'000;
  int rounds = 5;
  int kills = 5;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string key_of(std::size_t i) {
  return fmt::format("key-{:08}", i);
}

larder::Config config(const fs::path& root) {
  larder::Config c;
  c.cache_root = root;
  c.strategy = larder::Strategy::shared;
  c.max_entries = 0;
  c.max_size_bytes = 0;
  c.default_ttl = 0s;
  return c;
}

// A pipe to tell a child to go on, or the parent that the child is ready / its result.
struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() {
    if (::pipe(fd) != 0) std::abort();
  }
  void put(double v) const { (void)!::write(fd[1], &v, sizeof v); }
  double get() const {
    double v = 0;
    if (::read(fd[0], &v, sizeof v) != sizeof v) return -1;
    return v;
  }
};

// ---- bare echo round trip

double echo_round_trip_us(const Options& o) {
  const fs::path path = o.dir / "echo.sock";
  Pipe ready;
  // The server listens in the child: larder closes its registered sockets in forked children.
  const pid_t server = ::fork();
  if (server == 0) {
    auto listening = larder::shared::listen_unix(path);
    if (!listening) {
      std::fprintf(stderr, "echo: %s\n", listening.error().c_str());
      ::_exit(1);
    }
    const int listener = *listening;
    ready.put(1);
    int fd = -1;
    // Accepted like the owner accepts (non-blocking; the listener is too, so this spins briefly).
    while (fd < 0) fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    std::string payload;
    while (larder::shared::recv_frame(fd, &payload, larder::shared::kNoDeadline) ==
           larder::shared::IoResult::ok)
      if (larder::shared::send_frame(fd, payload, larder::shared::kNoDeadline) !=
          larder::shared::IoResult::ok)
        break;
    ::_exit(0);
  }
  (void)ready.get();
  bool refused = false;
  auto connected = larder::shared::connect_unix(path, Clock::now() + 5s, &refused);
  const int fd = connected ? *connected : -1;
  const std::string message(48, 'e');  // about the size of a get request
  std::string reply;
  const auto t0 = Clock::now();
  for (std::size_t i = 0; i < o.ops; ++i) {
    larder::shared::send_frame(fd, message, larder::shared::kNoDeadline);
    larder::shared::recv_frame(fd, &reply, larder::shared::kNoDeadline);
  }
  const double us = seconds_since(t0) * 1e6 / static_cast<double>(o.ops);
  larder::shared::close_socket(fd);
  ::waitpid(server, nullptr, 0);
  ::unlink(path.c_str());
  return us;
}

// ---- owner process and client processes

// Forks the owner: opens the cache (so it wins the election), fills it, reports ready, serves
// until told to stop.
pid_t start_owner(const Options& o, const fs::path& root, const Pipe& ready, const Pipe& stop) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    larder::Cache c = larder::Cache::open(config(root));
    const std::string value(100, 'v');
    for (std::size_t i = 0; i < o.keys; ++i) c.set(key_of(i), value);
    c.flush();
    ready.put(1);
    (void)stop.get();
    ::_exit(0);
  }
  (void)ready.get();
  return pid;
}

// Runs `clients` client processes at once, each doing o.ops gets (batch 1) or o.ops / batch
// get_many calls of `batch` keys. Returns the total operations per second.
double client_throughput(const Options& o, const fs::path& root, int clients, std::size_t batch) {
  Pipe ready, go, done;
  std::vector<pid_t> pids;
  for (int c = 0; c < clients; ++c) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      larder::Cache cache = larder::Cache::open(config(root));
      std::mt19937_64 rng(static_cast<unsigned>(c) * 7919u + 1u);
      std::uniform_int_distribution<std::size_t> pick(0, o.keys - 1);
      (void)cache.get(key_of(0));  // connect
      ready.put(1);
      (void)go.get();
      std::size_t hits = 0;
      const auto t0 = Clock::now();
      if (batch == 1) {
        for (std::size_t i = 0; i < o.ops; ++i) hits += cache.get(key_of(pick(rng))) ? 1 : 0;
      } else {
        std::vector<std::string> keys(batch);
        for (std::size_t i = 0; i < o.ops / batch; ++i) {
          for (auto& k : keys) k = key_of(pick(rng));
          for (const auto& v : cache.get_many(keys)) hits += v ? 1 : 0;
        }
      }
      done.put(seconds_since(t0));
      ::_exit(hits == (o.ops / batch) * batch ? 0 : 1);
    }
    pids.push_back(pid);
  }
  for (int c = 0; c < clients; ++c) (void)ready.get();
  for (int c = 0; c < clients; ++c) go.put(1);
  double slowest = 0;
  for (int c = 0; c < clients; ++c) slowest = std::max(slowest, done.get());
  bool all_hit = true;
  for (pid_t p : pids) {
    int status = 0;
    ::waitpid(p, &status, 0);
    all_hit = all_hit && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  if (!all_hit) std::fprintf(stderr, "warning: a client missed keys that were stored\n");
  return static_cast<double>(clients) * static_cast<double>((o.ops / batch) * batch) / slowest;
}

double local_get_us(const Options& o, const fs::path& root) {
  larder::Cache c = larder::Cache::open(config(root));
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<std::size_t> pick(0, o.keys - 1);
  std::vector<double> rounds;
  for (int r = 0; r < o.rounds; ++r) {
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < o.ops; ++i) (void)c.get(key_of(pick(rng)));
    rounds.push_back(seconds_since(t0) * 1e6 / static_cast<double>(o.ops));
  }
  return median(rounds);
}

// ---- takeover

// One takeover: an owner that has just written `o.keys` entries (in its WAL, not flushed) is
// killed while a client reads in a loop. Returns the longest gap between two completed reads
// (ms): detection, election, store open with WAL replay and the first request.
double takeover_gap_ms(const Options& o, const fs::path& root) {
  Pipe ready, stop, result;
  const pid_t owner = ::fork();
  if (owner == 0) {
    larder::Cache c = larder::Cache::open(config(root));
    const std::string value(1000, 'w');
    for (std::size_t i = 0; i < o.keys; ++i) c.set(key_of(i), value);
    ready.put(1);
    (void)stop.get();
    ::_exit(0);
  }
  (void)ready.get();
  Pipe client_ready;
  const pid_t client = ::fork();
  if (client == 0) {
    auto c = std::make_unique<larder::Cache>(larder::Cache::open(config(root)));
    (void)c->get(key_of(0));
    client_ready.put(1);
    double worst = 0;
    auto last = Clock::now();
    const auto end = last + 1500ms;
    std::size_t i = 0;
    while (Clock::now() < end) {
      if (c->get(key_of(i++ % o.keys))) {
        const auto now = Clock::now();
        worst = std::max(worst, std::chrono::duration<double, std::milli>(now - last).count());
        last = now;
      }
    }
    result.put(worst);
    c.reset();  // a clean close (it owns the store now)
    ::_exit(0);
  }
  (void)client_ready.get();
  ::usleep(200'000);  // the client is reading through the owner
  ::kill(owner, SIGKILL);
  ::waitpid(owner, nullptr, 0);
  const double gap = result.get();
  ::waitpid(client, nullptr, 0);
  return gap;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--dir")
      o.dir = next();
    else if (a == "--keys")
      o.keys = std::stoul(next());
    else if (a == "--ops")
      o.ops = std::stoul(next());
    else if (a == "--rounds")
      o.rounds = std::stoi(next());
    else if (a == "--kills")
      o.kills = std::stoi(next());
    else {
      std::fprintf(stderr,
                   "usage: larder-shared-bench [--dir DIR] [--keys N] [--ops N] [--rounds R] "
                   "[--kills K]\n");
      std::exit(2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  const bool own_dir = o.dir.empty();
  if (own_dir) {
    char tmpl[] = "/tmp/larder-shared-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return 1;
    o.dir = tmpl;
  }
  std::printf("larder-shared-bench: %zu keys of 100 B, %zu ops per client and round, %d rounds\n",
              o.keys, o.ops, o.rounds);
  // This process opens no store until the end: RocksDB cannot run in children forked from a
  // process that had one open (kv/rocks_kv.hpp), and every measurement below forks.
  const fs::path root = o.dir / "shared";
  Pipe ready, stop;
  const pid_t owner = start_owner(o, root, ready, stop);
  // The echo baseline and single client gets alternate, round by round, so that both see the
  // same machine state (this machine's wake-up latency varies a lot between moments).
  std::vector<double> echo_us, client_us;
  for (int r = 0; r < o.rounds; ++r) {
    echo_us.push_back(echo_round_trip_us(o));
    client_us.push_back(1e6 / client_throughput(o, root, 1, 1));
  }
  std::vector<std::pair<std::string, double>> rows;
  for (int clients : {1, 2, 4}) {
    for (std::size_t batch : {std::size_t{1}, std::size_t{100}}) {
      std::vector<double> v;
      for (int r = 0; r < o.rounds; ++r) v.push_back(client_throughput(o, root, clients, batch));
      rows.emplace_back(fmt::format("{} client{}, {}", clients, clients > 1 ? "s" : "",
                                    batch == 1 ? "single gets" : "get_many x100"),
                        median(v));
    }
  }
  stop.put(1);
  ::waitpid(owner, nullptr, 0);
  std::vector<double> gaps;
  for (int k = 0; k < o.kills; ++k) gaps.push_back(takeover_gap_ms(o, o.dir / "takeover"));
  const double local = local_get_us(o, root);  // this process owns the store now

  const double echo = median(echo_us), client = median(client_us);
  std::printf("\n%-36s %12s %8s\n", "measure", "median", "unit");
  std::printf("%-36s %12.2f %8s\n", "bare echo round trip", echo, "us");
  std::printf("%-36s %12.2f %8s\n", "local get (in the owner)", local, "us");
  std::printf("%-36s %12.2f %8s\n", "client get (1 client)", client, "us");
  std::printf("%-36s %12.2f %8s\n", "  client get / (echo + local get)", client / (echo + local),
              "x");
  for (const auto& [name, value] : rows)
    std::printf("%-36s %12.0f %8s\n", name.c_str(), value, "ops/s");
  if (!gaps.empty()) {  // --kills 0 measures no takeover
    std::printf("%-36s %12.1f %8s\n", "takeover gap after SIGKILL", median(gaps), "ms");
    std::printf("%-36s %12.1f %8s\n", "  worst of the runs",
                *std::max_element(gaps.begin(), gaps.end()), "ms");
  }
  if (own_dir) fs::remove_all(o.dir);
  return 0;
}
