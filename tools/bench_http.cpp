// larder-bench http: `cachectl serve` beside a bare cpp-httplib server that answers a constant,
// in the same run (docs/performance.md, "HTTP"). Both run as processes of their own; clients
// (threads of this process, one keep-alive connection each) GET a 1 KB value for a fixed time,
// with 1 and with 8 clients, alternating the two servers within each round. Rows: requests/s of
// each and their ratio, medians of the per-round figures. Target: larder >= 0.7x the bare server.
#include "bench_http.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>

#include "larder/larder.hpp"

namespace fs = std::filesystem;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// A child process whose first stdout line is read; killed when this goes.
class Process {
 public:
  template <class F>
  explicit Process(F&& in_child) {
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      in_child();
      ::_exit(127);
    }
    ::close(out[1]);
    FILE* f = ::fdopen(out[0], "r");
    char line[256] = {};
    if (std::fgets(line, sizeof line, f) == nullptr) throw std::runtime_error("no port printed");
    first_line_ = line;
    std::fclose(f);
  }
  ~Process() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  // The port at the end of the first line ("...:PORT").
  int port() const { return std::stoi(first_line_.substr(first_line_.rfind(':') + 1)); }

 private:
  pid_t pid_ = -1;
  std::string first_line_;
};

// GETs of `path` from `clients` threads for `seconds`; requests per second (failures end a
// client and are reported).
double requests_per_second(int port, const std::string& path, int clients, double seconds) {
  std::atomic<std::uint64_t> done{0}, failed{0};
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  const auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_keep_alive(true);
      cli.set_tcp_nodelay(true);
      std::uint64_t n = 0;
      while (std::chrono::steady_clock::now() < until) {
        auto r = cli.Get(path);
        if (!r || r->status != 200 || r->body.size() != 1024) {
          ++failed;
          break;
        }
        ++n;
      }
      done += n;
    });
  for (auto& t : threads) t.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (failed > 0) std::fprintf(stderr, "larder-bench http: %lu failed requests\n", failed.load());
  return static_cast<double>(done.load()) / elapsed;
}

}  // namespace

int bench_http(int rounds, double seconds) {
  char tmpl[] = "/tmp/larder-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::fprintf(stderr, "larder-bench http: no temporary directory\n");
    return 1;
  }
  const fs::path base = tmpl;
  const std::string value(1024, 'v');
  {
    larder::Config c;
    c.cache_root = base / "cache";
    c.strategy = larder::Strategy::shared;
    auto cache = larder::Cache::open(c);
    if (!cache.set(
            "k", value,
            larder::SetOptions{
                .ttl = std::chrono::milliseconds(0), .category = "default", .metadata = {}})) {
      std::fprintf(stderr, "larder-bench http: the cache refused the value\n");
      return 1;
    }
  }
  std::error_code ec;
  const fs::path cachectl = fs::read_symlink("/proc/self/exe", ec).parent_path() / "cachectl";
  int code = 0;
  try {
    Process served([&] {
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, STDERR_FILENO);
      const std::string root = (base / "cache").string();
      ::execl(cachectl.c_str(), "cachectl", "--root", root.c_str(), "serve", "--listen",
              "127.0.0.1:0", static_cast<char*>(nullptr));
    });
    Process bare([&] {
      httplib::Server s;
      s.set_keep_alive_max_count(1000);  // as cachectl serve's
      s.set_tcp_nodelay(true);
      s.Get("/k", [&](const httplib::Request&, httplib::Response& res) {
        res.set_content(value, "application/octet-stream");
      });
      const int port = s.bind_to_any_port("127.0.0.1");
      std::printf("listening on http://127.0.0.1:%d\n", port);
      std::fflush(stdout);
      s.listen_after_bind();
      ::_exit(0);
    });
    std::printf("GET of a 1 KB entry, keep-alive, %.1f s per measurement, %d rounds\n", seconds,
                rounds);
    std::printf("%-8s %14s %14s %8s\n", "clients", "bare req/s", "larder req/s", "ratio");
    for (int clients : {1, 8}) {
      std::vector<double> bare_rps, larder_rps, ratios;
      for (int r = 0; r < rounds; ++r) {
        const double b = requests_per_second(bare.port(), "/k", clients, seconds);
        const double l = requests_per_second(served.port(), "/api/v1/entries/k", clients, seconds);
        bare_rps.push_back(b);
        larder_rps.push_back(l);
        ratios.push_back(b > 0 ? l / b : 0);
      }
      std::printf("%-8d %14.0f %14.0f %8.2f\n", clients, median(bare_rps), median(larder_rps),
                  median(ratios));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "larder-bench http: %s\n", e.what());
    code = 1;
  }
  fs::remove_all(base, ec);
  return code;
}
