/* sandbox_probe: tries, from inside a container, what a sandbox must deny,
 * and prints one line per attempt: "NAME allowed" or "NAME denied ERRNO".
 * Built static by the tests and bind-mounted into the container, so it
 * needs nothing from the image.
 *
 * Arguments: HOST_PID HOST_PORT HOST_ADDR (a process, a TCP listener on the
 * host's loopback, and a non-loopback host address). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/reboot.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    if (rc < 0)
        printf("%s denied %d\n", name, errno);
    else
        printf("%s allowed\n", name);
}

/* Some attempts would change the probe itself (unshare): run them in a child. */
static void in_child(const char *name, long (*fn)(void)) {
    int pipefd[2];
    if (pipe(pipefd) != 0) {
        printf("%s error pipe\n", name);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        long rc = fn();
        int out[2] = {rc < 0 ? -1 : 0, errno};
        if (write(pipefd[1], out, sizeof out) != sizeof out)
            _exit(2);
        _exit(0);
    }
    close(pipefd[1]);
    int res[2] = {0, 0};
    ssize_t n = read(pipefd[0], res, sizeof res);
    close(pipefd[0]);
    waitpid(pid, NULL, 0);
    if (n != sizeof res) {
        printf("%s error child\n", name);
        return;
    }
    errno = res[1];
    report(name, res[0]);
}

static long do_unshare_user(void) { return unshare(CLONE_NEWUSER); }
static long do_unshare_mount(void) { return unshare(CLONE_NEWNS); }

/* Reads a file; a masked file reads as empty, which counts as denied. */
static void read_probe(const char *name, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        report(name, -1);
        return;
    }
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n > 0)
        printf("%s allowed\n", name);
    else if (n == 0)
        printf("%s denied empty\n", name);
    else
        report(name, -1);
}

static void write_probe(const char *name, const char *path, const char *data) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) {
        report(name, -1);
        return;
    }
    long rc = write(fd, data, strlen(data));
    close(fd);
    report(name, rc);
}

static void connect_probe(const char *name, const char *addr, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) {
        report(name, -1);
        return;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, addr, &sa.sin_addr);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    report(name, connect(s, (struct sockaddr *)&sa, sizeof sa));
    close(s);
}

/* A listener and a client on the container's own loopback. */
static void loopback_probe(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t len = sizeof sa;
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) != 0) {
        report("loopback", -1);
        return;
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    report("loopback", connect(c, (struct sockaddr *)&sa, sizeof sa));
    close(c);
    close(l);
}

/* Creates a character device node in /dev (a tmpfs that allows devices)
 * and opens it: only the device cgroup (v1) or program (v2) stands between
 * a container with CAP_MKNOD and a device that needs no capability to open. */
static void device_probe(const char *name, const char *path, int major, int minor) {
    unlink(path);
    if (mknod(path, S_IFCHR | 0600, makedev(major, minor)) != 0) {
        printf("%s error mknod %d\n", name, errno);
        return;
    }
    int fd = open(path, O_RDWR);
    int saved = errno;
    if (fd >= 0)
        close(fd);
    unlink(path);
    errno = saved;
    report(name, fd);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: sandbox_probe HOST_PID HOST_PORT HOST_ADDR\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    report("see_host_process", kill(atoi(argv[1]), 0));
    report("mount", mount("none", "/mnt", "tmpfs", 0, NULL));
    /* An empty module image: EPERM when denied, some other error if the
     * kernel got to look at it. */
    report("init_module", syscall(SYS_init_module, "", 0UL, ""));
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    write_probe("sysrq_trigger", "/proc/sysrq-trigger", "h");
    read_probe("kcore", "/proc/kcore");
    read_probe("timer_list", "/proc/timer_list");
    write_probe("proc_sys", "/proc/sys/vm/drop_caches", "3");
    report("mknod_block", mknod("/tmp/probe-blk", S_IFBLK | 0600, makedev(8, 0)));
    device_probe("open_fuse_device", "/dev/probe-fuse", 10, 229);
    device_probe("open_zero_device", "/dev/probe-zero", 1, 5);
    report("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* SESSION */, 0));
    report("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, -3));
    in_child("unshare_user", do_unshare_user);
    in_child("unshare_mount", do_unshare_mount);
    /* A wrong magic: a kernel that got this far would say EINVAL. */
    report("reboot", syscall(SYS_reboot, 0, 0, LINUX_REBOOT_CMD_CAD_OFF, NULL));
    connect_probe("host_loopback", "127.0.0.1", atoi(argv[2]));
    connect_probe("host_address", argv[3], atoi(argv[2]));
    loopback_probe();
    return 0;
}
