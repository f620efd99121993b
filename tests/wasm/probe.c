/* The Wasm sandbox's test module (crates/cli/tests/wasm.rs): one WASI
 * command whose first argument picks what it does. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cat(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    printf("denied %s: errno %d (%s)\n", path, errno, strerror(errno));
    return 1;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
  fclose(f);
  return 0;
}

static int put(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) {
    printf("denied %s: errno %d (%s)\n", path, errno, strerror(errno));
    return 1;
  }
  fputs(text, f);
  fclose(f);
  printf("wrote %s\n", path);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    const char *greeting = getenv("GREETING");
    printf("hello from wasm, GREETING=%s, HOME=%s\n", greeting ? greeting : "(none)",
           getenv("HOME") ? getenv("HOME") : "(none)");
    return 0;
  }
  const char *what = argv[1];
  if (!strcmp(what, "args")) {
    for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
    return 0;
  }
  if (!strcmp(what, "cat") && argc > 2) return cat(argv[2]);
  if (!strcmp(what, "put") && argc > 3) return put(argv[2], argv[3]);
  if (!strcmp(what, "exit") && argc > 2) return atoi(argv[2]);
  if (!strcmp(what, "tty")) {
    printf("stdin %s, stdout %s\n", isatty(0) ? "tty" : "not a tty", isatty(1) ? "tty" : "not a tty");
    return 0;
  }
  if (!strcmp(what, "echo-stdin")) {
    char line[256];
    while (fgets(line, sizeof line, stdin)) printf("got %s", line);
    return 0;
  }
  if (!strcmp(what, "grow")) {
    /* Keeps and touches what it gets, 1 MiB at a time, until memory runs
     * out; the list keeps the compiler from dropping the allocations. */
    static void *volatile kept;
    for (size_t total = 0;; total += 1 << 20) {
      void **p = malloc(1 << 20);
      if (!p) {
        printf("malloc failed after %zu MiB\n", total >> 20);
        return 3;
      }
      memset(p, 1, 1 << 20);
      *p = kept;
      kept = p;
    }
  }
  if (!strcmp(what, "sleep") && argc > 2) {
    printf("sleeping\n");
    fflush(stdout);
    sleep(atoi(argv[2]));
    return 0;
  }
  if (!strcmp(what, "spin")) {
    printf("spinning\n");
    fflush(stdout);
    for (volatile unsigned long i = 0;; i++) {
    }
  }
  if (!strcmp(what, "trap")) {
    __builtin_trap();
  }
  fprintf(stderr, "probe: unknown command %s\n", what);
  return 2;
}
