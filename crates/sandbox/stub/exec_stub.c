/*
 * skiff's exec stub: the container's init execs this (from a sealed
 * memfd) and it execs the container's command. While the kernel resolves
 * the command's interpreter, /proc/self/exe then names this sealed copy,
 * not the skiff binary on the host (CVE-2019-5736). See init.rs.
 *
 * argv: "skiff-exec-stub" PATH ARGV0 ARGV1 ...; execs PATH with ARGV.
 * Anything else (such as a script whose interpreter is /proc/self/exe)
 * is refused. Freestanding: no libc, raw x86-64 Linux syscalls.
 */

#define SYS_write 1
#define SYS_execve 59
#define SYS_exit_group 231

static long syscall3(long n, long a, long b, long c)
{
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return ret;
}

static unsigned long length(const char *s)
{
	unsigned long n = 0;
	while (s[n])
		n++;
	return n;
}

static void say(const char *s)
{
	syscall3(SYS_write, 2, (long)s, (long)length(s));
}

static __attribute__((noreturn)) void quit(int code)
{
	for (;;)
		syscall3(SYS_exit_group, code, 0, 0);
}

__attribute__((noreturn, used)) void stub_main(long *sp)
{
	static const char marker[] = "skiff-exec-stub";
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	const char *a0 = argc > 0 ? argv[0] : "";
	unsigned long i = 0;
	while (marker[i] && a0[i] == marker[i])
		i++;
	if (argc < 3 || marker[i] || a0[i]) {
		say("skiff: refusing to run skiff's exec stub as a program (an interpreter of /proc/self/exe?)\n");
		quit(126);
	}
	long err = syscall3(SYS_execve, (long)argv[1], (long)(argv + 2), (long)envp);
	say("skiff: cannot run ");
	say(argv[1]);
	say(err == -2 ? ": no such file\n" : err == -8 ? ": exec format error\n" : ": exec failed\n");
	quit(err == -2 ? 127 : 126);
}

__asm__(".globl _start\n"
	"_start:\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call stub_main\n"
	"	hlt\n");
