"""Test helpers for the exploit-regression tests (tests/integration/test_security*.py); tests only.

- ``build_probe``: a static ``probe`` binary, the attacker's tool inside a container:
    ``probe pid PID``            try every way into process PID (its /proc/PID/exe, cwd, the
                                 targets of its fds, environ, mem, and ptrace) and print
                                 ``exe=ERR cwd=ERR ...``
                                 (``ok`` where the kernel let us in, else the errno's name);
    ``probe watch SECS STOP``    watch /proc for processes that are not running a binary of this
                                 container (the init stage of ``pyrunc exec`` is one) and attack
                                 each again and again until it is gone or runs one of ours:
                                 ``SEEN pid exe=ERR cwd=ERR mem=ERR`` at its first refusal,
                                 ``BREACH pid ...`` when we got its executable, cwd or mem;
                                 at the end ``TRIES pid N`` (refused attempts) and ``DONE``;
                                 ends after SECS or once the file STOP exists;
    ``probe swap A B SECS``      exchange the names A and B (renameat2 RENAME_EXCHANGE) as fast as
                                 possible for SECS seconds (the CVE-2021-30465 racer);
- ``interpreter_rootfs``: copy into a rootfs what the host's Python needs to run in there (its
  shared libraries and the ``encodings`` package), so that a container can execute the very
  interpreter pyrunc's init stage runs, as a CVE-2019-5736 payload would;
- ``private_interpreter``: a copy of the interpreter and a pyrunc launcher that runs on it, so
  that an exploit that tries to write "the runtime's executable" aims at a file of the test's
  own that no other process executes (the host's /usr/bin/python3 is never at risk).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

PROBE_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *err(int ok) { return ok ? "ok" : strerrorname_np(errno); }

static const char *try_exe(int pid, struct stat *st) {
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/exe", pid);
    int fd = open(p, O_PATH | O_CLOEXEC);
    if (fd < 0) return err(0);
    fstat(fd, st);
    close(fd);
    return "ok";
}

static const char *try_cwd(int pid) {
    char p[64], buf[4096];
    snprintf(p, sizeof p, "/proc/%d/cwd", pid);
    return err(readlink(p, buf, sizeof buf) >= 0);
}

static const char *try_fd(int pid) {  /* listing the numbers is allowed; following them is not */
    char p[64], l[128], buf[4096];
    snprintf(p, sizeof p, "/proc/%d/fd", pid);
    DIR *d = opendir(p);
    if (!d) return err(0);
    const char *r = "empty";
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(l, sizeof l, "%s/%s", p, e->d_name);
        if (readlink(l, buf, sizeof buf) >= 0) { r = "ok"; break; }
        r = err(0);
    }
    closedir(d);
    return r;
}

static const char *try_open(int pid, const char *what, int flags) {
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/%s", pid, what);
    int fd = open(p, flags | O_CLOEXEC);
    if (fd < 0) return err(0);
    close(fd);
    return "ok";
}

static const char *try_ptrace(int pid) {
    if (ptrace(PTRACE_ATTACH, pid, 0, 0) != 0) return err(0);
    waitpid(pid, NULL, __WALL);
    ptrace(PTRACE_DETACH, pid, 0, 0);
    return "ok";
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int mine(struct stat *st) {  /* one of this container's own executables? */
    static const char *own[] = {"/proc/self/exe", "/bin/busybox", "/bin/sh", NULL};
    struct stat o;
    for (int i = 0; own[i]; i++)
        if (stat(own[i], &o) == 0 && o.st_dev == st->st_dev && o.st_ino == st->st_ino) return 1;
    return 0;
}

static int watch(double secs, const char *stop) {
    /* per pid: 0 not met, 1 done with it (ours, or breached), 2 refused so far: try again.
       No ptrace here: a stopped init stage would hang its exec; /proc/PID/mem opened for
       writing takes the same PTRACE_MODE_ATTACH check. */
    enum { MAXPID = 1 << 22 };  /* the kernel's pid_max limit */
    static char state[MAXPID];
    static int tries[MAXPID];
    double end = now() + secs;
    int self = getpid();
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (now() < end && access(stop, F_OK) != 0) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == self || pid >= MAXPID || state[pid] == 1) continue;
            struct stat st;
            const char *exe = try_exe(pid, &st);
            if (strcmp(exe, "ok") == 0) {
                state[pid] = 1;
                if (!mine(&st))
                    printf("BREACH %d exe=ok(%lu:%lu)\n", pid, (unsigned long)st.st_dev, (unsigned long)st.st_ino);
            } else if (errno != ENOENT && errno != ESRCH) {
                const char *cwd = try_cwd(pid), *mem = try_open(pid, "mem", O_RDWR);
                if (strcmp(cwd, "ok") == 0 || strcmp(mem, "ok") == 0) {
                    state[pid] = 1;  /* unless it has just exec'd one of ours, which we may reach */
                    if (strcmp(try_exe(pid, &st), "ok") != 0 || !mine(&st))
                        printf("BREACH %d exe=%s cwd=%s mem=%s\n", pid, exe, cwd, mem);
                } else if (state[pid] == 0) {
                    state[pid] = 2;
                    printf("SEEN %d exe=%s cwd=%s mem=%s\n", pid, exe, cwd, mem);
                }
                tries[pid]++;
            }
        }
        closedir(d);
    }
    for (int pid = 0; pid < MAXPID; pid++)
        if (tries[pid]) printf("TRIES %d %d\n", pid, tries[pid]);
    printf("DONE\n");
    return 0;
}

static int swap(const char *a, const char *b, double secs) {
    double end = now() + secs;
    long n = 0;
    while (now() < end) {
        for (int i = 0; i < 1000; i++)
            if (renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0) n++;
    }
    printf("swapped %ld\n", n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "pid") == 0) {
        int pid = atoi(argv[2]);
        struct stat st;
        printf("exe=%s cwd=%s fd=%s environ=%s mem=%s ptrace=%s\n", try_exe(pid, &st), try_cwd(pid),
               try_fd(pid), try_open(pid, "environ", O_RDONLY), try_open(pid, "mem", O_RDWR), try_ptrace(pid));
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "watch") == 0) return watch(atof(argv[2]), argv[3]);
    if (argc == 5 && strcmp(argv[1], "swap") == 0) return swap(argv[2], argv[3], atof(argv[4]));
    fprintf(stderr, "usage: probe pid PID | watch SECS STOPFILE | swap A B SECS\n");
    return 2;
}
"""

# what `probe pid` prints when the kernel keeps the attacker out of every door
LOCKED_OUT = {"exe": "EACCES", "cwd": "EACCES", "fd": "EACCES", "environ": "EACCES", "mem": "EACCES",
              "ptrace": "EPERM"}


def build_probe(dest: Path) -> Path | None:
    """Compile the static probe into ``dest``; None when there is no C compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        return None
    src = dest.with_suffix(".c")
    src.write_text(PROBE_C)
    subprocess.run([cc, "-static", "-O", "-o", str(dest), str(src)], check=True, capture_output=True)
    return dest


def parse_probe(line: str) -> dict[str, str]:
    """``exe=EACCES cwd=...`` -> {"exe": "EACCES", ...}"""
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def real_interpreter() -> Path:
    """The interpreter pyrunc's launcher (and so its init stage) runs."""
    return Path(os.path.realpath(sys.executable))


def interpreter_rootfs(rootfs: Path, interpreter: Path | None = None) -> None:
    """Make ``interpreter`` (default: the host's Python) runnable inside ``rootfs``: its dynamic
    loader and libraries at their host paths, and the pure-Python ``encodings`` package it
    cannot start without.  The interpreter itself is NOT copied: the attack runs the host's."""
    interpreter = interpreter or real_interpreter()
    out = subprocess.run(["ldd", str(interpreter)], check=True, capture_output=True, text=True).stdout
    for path in re.findall(r"(/\S+)", out):
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)  # follows the links: the real file under the link's name
    lib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copytree(lib / "encodings", rootfs / lib.relative_to("/") / "encodings",
                    ignore=shutil.ignore_patterns("__pycache__"))


def private_interpreter(where: Path, launcher: Path) -> tuple[Path, Path]:
    """A copy of the interpreter (with a pyvenv.cfg so that it finds the standard library) and
    a copy of the pyrunc ``launcher`` that runs on it; returns (interpreter, launcher)."""
    real = real_interpreter()
    (where / "bin").mkdir(parents=True)
    python = where / "bin" / real.name
    shutil.copy2(real, python)
    (where / "pyvenv.cfg").write_text(f"home = {real.parent}\ninclude-system-site-packages = false\n")
    lines = launcher.read_text().splitlines(keepends=True)
    assert lines[0].startswith("#!") and "-I" in lines[0], lines[0]
    new = where / "pyrunc"
    new.write_text(f"#!{python} -IS\n" + "".join(lines[1:]))
    new.chmod(0o755)
    return python, new


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ------------------------------------------------------------------ fixtures (imported by the test files), container helpers


@pytest.fixture(scope="session")
def probe(workdir: Path) -> Path:
    """The static C probe, built once per session (skips without a compiler)."""
    path = build_probe(workdir / "probe")
    if path is None:
        pytest.skip("no C compiler for the static probe")
    return path


@pytest.fixture
def scratch(workdir: Path):  # type: ignore[no-untyped-def]
    """A directory of the test's own that a user namespace's ids can reach (not pytest's 0700 tmp)."""
    d = Path(tempfile.mkdtemp(prefix="sec-", dir=workdir))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def own_rootfs(scratch: Path, probe: Path) -> Path:
    """A private busybox rootfs with /bin/probe in it, to plant files in."""
    from conftest import mkbundle

    rootfs = mkbundle.build_rootfs(scratch / "rootfs")
    shutil.copy(probe, rootfs / "bin/probe")
    return rootfs


def bundle_on(make_bundle, rootfs: Path, args: list[str], **options: object) -> Path:  # type: ignore[no-untyped-def]
    """make_bundle, on ``rootfs``."""
    from conftest import edit_config

    bundle = make_bundle(args, **options)
    edit_config(bundle, lambda c: c["root"].update(path=str(rootfs)))
    return bundle


def create(pyrunc, bundle: Path, *flags: str, cid: str | None = None, cwd: str | None = None):  # type: ignore[no-untyped-def]
    """``pyrunc create``; returns (id, init pid, output file of the container's stdout+stderr)."""
    from conftest import new_id

    cid = cid or new_id()
    out = bundle / f"out-{cid}"
    with open(out, "w") as f:
        p = pyrunc("create", "-b", str(bundle), *flags, cid, stdout=f, stderr=f, check=False, cwd=cwd)
    assert p.returncode == 0, f"create failed: {out.read_text()}"
    return cid, pyrunc.state(cid)["pid"], out


def exec_detached(pyrunc, cid: str, out: Path, *args: str, cwd: str | None = None) -> int:  # type: ignore[no-untyped-def]
    """``pyrunc exec -d``, the process's output to ``out``; its host pid."""
    pid_file = out.with_suffix(".pid")
    with open(out, "w") as f:
        pyrunc("exec", "-d", "--pid-file", str(pid_file), cid, *args, stdout=f, stderr=f, cwd=cwd)
    return int(pid_file.read_text())


def refused(result: dict[str, str]) -> bool:
    """A probe's result in which the kernel let us through no door at all."""
    return bool(result) and "ok" not in result.values()


def host_mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {unescape(line.split()[4]) for line in f}


def unescape(field: str) -> str:
    """A mountinfo path field (spaces and the like as octal escapes) as the path it names."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
