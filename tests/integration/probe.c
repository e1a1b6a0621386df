/* A syscall probe for tests/integration/test_security.py: it makes one syscall, named by its
 * first argument, with arguments that do no harm even when the kernel accepts them (an
 * invalid flag, a path that does not exist, a clock that cannot be set), and prints the
 * result: "0" when the syscall succeeded, else the errno number. The tests compare that with
 * what the seccomp profile and the capabilities must give (EPERM, ENOSYS, or the kernel's
 * own answer once the filter lets the call through).
 *
 * Built static by the test (gcc -static), since the busybox image has no libc.
 *   probe NAME [PID]      NAME: see the table in main
 *   probe euid            print the effective uid (the setuid test runs a setuid copy)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>

static long result(long value) { return value < 0 ? errno : 0; }

static long probe_perf(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    return result(syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
}

static long probe_bpf(void) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    return result(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
}

static long probe_open_by_handle(void) {
    struct { struct file_handle handle; unsigned char bytes[128]; } buffer;
    int mount_id;
    buffer.handle.handle_bytes = 128;
    if (syscall(SYS_name_to_handle_at, AT_FDCWD, "/dev", &buffer.handle, &mount_id, 0) < 0)
        return errno;
    int root = open("/dev", O_RDONLY | O_DIRECTORY); /* a tmpfs: overlayfs has no handles */
    return result(syscall(SYS_open_by_handle_at, root, &buffer.handle, O_RDONLY));
}

static long probe_clock_settime(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return result(syscall(SYS_clock_settime, CLOCK_MONOTONIC, &now)); /* EINVAL once allowed */
}

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "";
    long error;
    if (!strcmp(name, "euid")) {
        printf("%d\n", (int)geteuid());
        return 0;
    } else if (!strcmp(name, "unshare-user")) {
        error = result(syscall(SYS_unshare, CLONE_NEWUSER));
    } else if (!strcmp(name, "clone-user")) {  /* a namespace flag on clone: the child exits at once */
        long pid = syscall(SYS_clone, CLONE_NEWUSER | 17 /* SIGCHLD */, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        error = result(pid);
    } else if (!strcmp(name, "mount")) {
        error = result(mount("none", "/tmp", "tmpfs", 0, ""));
    } else if (!strcmp(name, "keyctl")) {  /* KEYCTL_GET_KEYRING_ID of KEY_SPEC_USER_KEYRING */
        error = result(syscall(SYS_keyctl, 0, -4, 0));
    } else if (!strcmp(name, "add-key")) {  /* into KEY_SPEC_PROCESS_KEYRING */
        error = result(syscall(SYS_add_key, "user", "dockyard-probe", "x", 1, -2));
    } else if (!strcmp(name, "bpf")) {
        error = probe_bpf();
    } else if (!strcmp(name, "perf-event-open")) {
        error = probe_perf();
    } else if (!strcmp(name, "userfaultfd")) {  /* UFFD_USER_MODE_ONLY */
        error = result(syscall(SYS_userfaultfd, O_CLOEXEC | 1));
    } else if (!strcmp(name, "io-uring-setup")) {
        char params[120];
        memset(params, 0, sizeof params);
        error = result(syscall(SYS_io_uring_setup, 1, params));
    } else if (!strcmp(name, "ptrace") && argc > 2) {  /* PTRACE_ATTACH */
        error = result(syscall(SYS_ptrace, 16, atol(argv[2]), 0, 0));
    } else if (!strcmp(name, "open-by-handle-at")) {
        error = probe_open_by_handle();
    } else if (!strcmp(name, "kexec-load")) {  /* an architecture no kernel has: EINVAL if allowed */
        error = result(syscall(SYS_kexec_load, 0, 0, NULL, 0x12340000UL));
    } else if (!strcmp(name, "init-module")) {  /* an empty image: ENOEXEC if allowed */
        error = result(syscall(SYS_init_module, NULL, 0, ""));
    } else if (!strcmp(name, "clock-settime")) {
        error = probe_clock_settime();
    } else if (!strcmp(name, "swapon")) {
        error = result(syscall(SYS_swapon, "/nonexistent-swap", 0));
    } else if (!strcmp(name, "reboot")) {  /* bad magic numbers: EINVAL once the capability check passed */
        error = result(syscall(SYS_reboot, 0, 0, 0, NULL));
    } else {
        fprintf(stderr, "probe: unknown probe %s\n", name);
        return 2;
    }
    printf("%ld\n", error);
    return 0;
}
