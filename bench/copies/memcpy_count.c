// LD_PRELOAD: counts memcpy/memmove calls of at least LARDER_COPY_MIN bytes; prints at exit.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <execinfo.h>
static size_t min_bytes = 0;
static unsigned long copies = 0;
static void* (*real_memcpy)(void*, const void*, size_t);
static void* (*real_memmove)(void*, const void*, size_t);
static void fini(void);
static void on_usr1(int sig) { (void)sig; fini(); }
__attribute__((constructor)) static void init(void) {
  const char* m = getenv("LARDER_COPY_MIN");
  min_bytes = m ? strtoull(m, 0, 10) : (1u << 20);
  real_memcpy = dlsym(RTLD_NEXT, "memcpy");
  real_memmove = dlsym(RTLD_NEXT, "memmove");
  if (getenv("LARDER_COPY_USR1")) signal(SIGUSR1, on_usr1);
}
__attribute__((destructor)) static void fini(void) {
  char buf[128];
  int n = snprintf(buf, sizeof buf, "copies>=%zu pid %d: %lu\n", min_bytes, getpid(), copies);
  if (write(2, buf, n)) {}
}
static __thread int in_bt = 0;
static void trace(void) {
  if (!getenv("LARDER_COPY_TRACE") || in_bt) return;
  in_bt = 1;
  void* frames[12];
  int k = backtrace(frames, 12);
  write(2, "-- copy\n", 8);
  backtrace_symbols_fd(frames + 1, k - 1, 2);
  in_bt = 0;
}
void* memcpy(void* d, const void* s, size_t n) {
  if (n >= min_bytes && min_bytes) { __atomic_add_fetch(&copies, 1, __ATOMIC_RELAXED); trace(); }
  if (!real_memcpy) { char* dd = d; const char* ss = s; for (size_t i = 0; i < n; ++i) dd[i] = ss[i]; return d; }
  return real_memcpy(d, s, n);
}
void* memmove(void* d, const void* s, size_t n) {
  if (n >= min_bytes && min_bytes) { __atomic_add_fetch(&copies, 1, __ATOMIC_RELAXED); trace(); }
  if (!real_memmove) { char* dd = d; const char* ss = s; if (dd < ss) for (size_t i = 0; i < n; ++i) dd[i] = ss[i]; else for (size_t i = n; i-- > 0;) dd[i] = ss[i]; return d; }
  return real_memmove(d, s, n);
}
