"""open-iscsi in a VM (issue 18): ``lab/vm build`` and ``lab/vm run``.

This machine's kernel has no SCSI modules, so the Linux kernel initiator runs in a QEMU guest
made only of Debian packages:

* ``build`` downloads (``apt-get download``) the kernel ``linux-image-amd64`` points at,
  ``busybox-static``, ``open-iscsi`` and ``e2fsprogs`` with the libraries they link that the host
  lacks, runs ``depmod`` on the kernel's modules (the package ships no ``modules.dep``: its
  postinst makes it), and writes ``vmlinuz`` and ``initrd.gz``: a newc cpio archive, gzip'd, with
  busybox, ``iscsid``/``iscsiadm`` and the e2fsprogs tools (their shared libraries resolved with
  ``ldd``), the modules the initiator needs in dependency order, and ``lab/vm-guest/init``.
  Everything is cached in the build directory (``build/vm/`` of the repository, git-ignored).
* ``run`` appends a second cpio (the run's parameters and script; the kernel unpacks
  concatenated archives in order) and boots the guest: KVM when ``/dev/kvm`` opens, TCG
  otherwise, ``-nographic`` with the serial console in a log, ``-netdev user`` (the guest reaches
  the host's loopback as 10.0.2.2).  The guest logs in with ``iscsiadm``, runs the script under
  ``sh -e``, prints ``SANLAB-VM-EXIT <rc>`` and powers off; the runner returns that rc.  Every
  wait is bounded and QEMU is killed by pid.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
GUEST = REPO / "lab" / "vm-guest"
DEFAULT_DIR = REPO / "build" / "vm"
DEFAULT_SCRIPT = GUEST / "roundtrip.sh"
DEFAULT_INITIATOR = "iqn.2026-11.org.sanlab:vm-guest"
BUILD_FORMAT = 1
"""Bumped when the guest's layout changes, so a cached build of an older layout is rebuilt."""

KERNEL_META = "linux-image-amd64"
PACKAGES = ("busybox-static", "open-iscsi", "e2fsprogs")
BINARIES = {  # guest path -> path inside the extracted packages
    "/sbin/iscsid": "sbin/iscsid",
    "/sbin/iscsiadm": "sbin/iscsiadm",
    "/sbin/mke2fs": "sbin/mke2fs",
    "/sbin/e2fsck": "sbin/e2fsck",
}
LINKS = {"/sbin/mkfs.ext4": "mke2fs", "/sbin/fsck.ext4": "e2fsck"}
CONFIGS = {"/etc/iscsi/iscsid.conf": "etc/iscsi/iscsid.conf", "/etc/mke2fs.conf": "etc/mke2fs.conf"}
MODULES = (
    # The NIC QEMU gives the guest (virtio-net-pci), with e1000 for -device e1000.
    "virtio_pci", "virtio_net", "e1000",
    # Crypto the kernel looks up by name at run time, which modules.dep cannot list: crc32c for
    # ext4's metadata checksums and iSCSI digests, crct10dif/crc64 for sd's protection info.
    "crc32c_generic", "crct10dif_generic", "crc64_rocksoft_generic",
    "iscsi_tcp", "sd_mod", "ext4",
)

READY = "SANLAB-VM-READY"
EXIT = "SANLAB-VM-EXIT"
BOOT_TIMEOUT = 120.0
"""Seconds from QEMU's start to the guest's READY line (modules loaded, iscsid up): TCG is slow."""
RUN_TIMEOUT = 600.0
POWEROFF_TIMEOUT = 20.0

# newc cpio header (the kernel's initramfs format, Documentation/driver-api/early-userspace):
# magic then 13 fields of 8 hex digits: ino mode uid gid nlink mtime filesize devmajor devminor
# rdevmajor rdevminor namesize check; name and data each padded to 4 bytes.
CPIO_MAGIC = b"070701"
CPIO_FIELDS = 13
S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR = 0o040000, 0o100000, 0o120000, 0o020000


class VmError(Exception):
    """A build or run problem, said in the user's terms."""


@dataclass
class Cpio:
    """A newc archive built in memory (no root needed for device nodes or ownership)."""
    out: bytearray = field(default_factory=bytearray)
    names: set[str] = field(default_factory=set)

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.lstrip("/")
        if name in self.names:
            return
        self.names.add(name)
        raw = name.encode() + b"\0"
        values = (len(self.names), mode, 0, 0, 2 if mode & S_IFDIR else 1, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(raw), 0)
        assert len(values) == CPIO_FIELDS
        self.out += CPIO_MAGIC + b"".join(b"%08X" % v for v in values) + raw
        self.out += b"\0" * (-len(self.out) % 4) + data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name: str) -> None:
        """A directory and its parents (each once)."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """A regular file (its directory made first)."""
        self.dir(os.path.dirname(name.strip("/")) or ".")
        self._entry(name, S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        """A symbolic link to ``target``."""
        self.dir(os.path.dirname(name.strip("/")) or ".")
        self._entry(name, S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        """A character device node (e.g. /dev/console)."""
        self._entry(name, S_IFCHR | 0o600, rdev=(major, minor))

    def gzipped(self) -> bytes:
        """The archive: the newc entries, the trailer, gzip-compressed."""
        self.names.discard(".")
        self._entry("TRAILER!!!", 0)
        return gzip.compress(bytes(self.out), 6)


def _sh(cmd: Sequence[str], cwd: Path | None = None, timeout: float = 600) -> str:
    cp = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if cp.returncode != 0:
        raise VmError(f"{' '.join(cmd)} failed ({cp.returncode}): {cp.stderr.strip()[-2000:]}")
    return cp.stdout


def ensure_host_tools(say: Callable[[str], None]) -> None:
    """qemu-system-x86_64 (to boot) and depmod (kmod, to make modules.dep) from Debian's packages."""
    missing = [pkg for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("depmod", "kmod"),
                                     ("dpkg-deb", "dpkg"), ("ldd", "libc-bin")) if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise VmError(f"missing {' '.join(missing)}: apt-get install {' '.join(missing)} (as root)")
    say(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cp = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                        capture_output=True, text=True, env=env, timeout=900)
    if cp.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        _sh(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], timeout=900)


def _depends(pkg: str) -> list[str]:
    out = _sh(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-enhances",
               "--no-conflicts", "--no-breaks", "--no-replaces", pkg])
    return [m.group(1) for m in re.finditer(r"^\s+(?:Pre)?Depends: ([^<\s]+)$", out, re.M)]


def _version(pkg: str) -> str:
    out = _sh(["apt-cache", "policy", pkg])
    m = re.search(r"Candidate: (\S+)", out)
    if m is None or m.group(1) == "(none)":
        raise VmError(f"apt has no candidate for {pkg} (apt-get update?)")
    return m.group(1)


def _download(pkgs: Sequence[str], debs: Path) -> list[Path]:
    debs.mkdir(parents=True, exist_ok=True)
    # The _apt user must be able to write where apt-get download puts files.
    os.chmod(debs, 0o777)
    want = {p: _version(p) for p in pkgs}
    have = {d.name.split("_")[0]: d for d in debs.glob("*.deb")}
    fetch = [f"{p}={v}" for p, v in want.items() if p not in have or have[p].name.split("_")[1].replace("%3a", ":") != v]
    if fetch:
        _sh(["apt-get", "download", "-q", *fetch], cwd=debs, timeout=900)
    return [next(debs.glob(f"{p}_*.deb")) for p in pkgs]


def _module_order(moddir: Path, wanted: Sequence[str]) -> list[Path]:
    """The wanted modules and their dependencies, dependencies first (modules.dep lists a module's
    dependencies after it, the deepest last)."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.removesuffix(".ko").replace("-", "_"): m for m in deps}
    order: list[str] = []

    def add(mod: str) -> None:
        if mod in order:
            return
        for d in reversed(deps[mod]):
            add(d)
        order.append(mod)

    for name in wanted:
        if name not in by_name:
            raise VmError(f"module {name} is not in {moddir}/modules.dep")
        add(by_name[name])
    return [moddir / m for m in order]


def _libraries(binary: Path, root: Path) -> list[Path]:
    """The shared libraries ``binary`` loads, found in the extracted packages first, then the host."""
    libpath = ":".join(str(root / d) for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"))
    cp = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=60,
                        env=dict(os.environ, LD_LIBRARY_PATH=libpath))
    libs: list[Path] = []
    for line in cp.stdout.splitlines():
        if "not found" in line:
            raise VmError(f"{binary.name} needs {line.split()[0]}, in no package lib/vm build fetched")
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def build(directory: Path = DEFAULT_DIR, say: Callable[[str], None] = print, force: bool = False) -> dict[str, str]:
    """Make (or reuse) ``directory``/vmlinuz and initrd.gz; returns the build's manifest."""
    ensure_host_tools(say)
    directory.mkdir(parents=True, exist_ok=True)
    kernel_pkg = next((d for d in _depends(KERNEL_META) if d.startswith("linux-image-")), None)
    if kernel_pkg is None:
        raise VmError(f"{KERNEL_META} depends on no linux-image-* package")
    open_iscsi_libs = [d for d in _depends("open-iscsi") + _depends("e2fsprogs") if d.startswith("lib")]
    pkgs = [kernel_pkg, *PACKAGES, *dict.fromkeys(open_iscsi_libs)]
    manifest = {p: _version(p) for p in pkgs}
    manifest["format"] = str(BUILD_FORMAT)
    manifest["init"] = (GUEST / "init").read_text() + (GUEST / "functions").read_text()
    stamp = directory / "build.json"
    if not force and stamp.exists() and (directory / "initrd.gz").exists():
        if json.loads(stamp.read_text()) == manifest:
            say(f"guest up to date in {directory} (accelerator {accelerator(directory, say)})")
            return manifest
    say(f"downloading {len(pkgs)} packages ({kernel_pkg} {manifest[kernel_pkg]})")
    debs = _download(pkgs, directory / "debs")
    root = directory / "root"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    for deb in debs:
        _sh(["dpkg-deb", "-x", str(deb), str(root)])
    kver = next((root / "lib" / "modules").iterdir()).name
    _sh(["depmod", "-b", str(root), kver])
    moddir = root / "lib" / "modules" / kver

    cpio = Cpio()
    for d in ("dev", "proc", "sys", "tmp", "run", "mnt", "etc/iscsi", "etc/sanlab", "var/lib/iscsi",
              "var/lock", "lab", "root", "lib/modules"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)  # the kernel opens it for /init's stdio before devtmpfs is mounted
    cpio.chardev("dev/null", 1, 3)
    busybox = root / "bin" / "busybox"
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    provided = {Path(p).name for p in [*BINARIES, *LINKS]}
    for applet in _sh([str(busybox), "--list-full"]).split():
        if Path(applet).name not in provided and applet != "bin/busybox":
            cpio.symlink(applet, "/bin/busybox")
    libs: dict[Path, None] = {}
    for guest, extracted in BINARIES.items():
        cpio.file(guest, (root / extracted).read_bytes(), 0o755)
        libs.update(dict.fromkeys(_libraries(root / extracted, root)))
    for lib in libs:
        # Guest path: where the host's loader found it, minus the extraction root.
        rel = lib.relative_to(root) if lib.is_relative_to(root) else lib.relative_to("/")
        cpio.file(str(rel), lib.resolve().read_bytes(), 0o755)
    for guest, target in LINKS.items():
        cpio.symlink(guest, target)
    for guest, extracted in CONFIGS.items():
        cpio.file(guest, (root / extracted).read_bytes())
    order = _module_order(moddir, MODULES)
    for ko in order:
        cpio.file(f"lib/modules/{ko.stem}.ko", ko.read_bytes())
    cpio.file("etc/sanlab/modules", "\n".join(ko.stem for ko in order).encode() + b"\n")
    cpio.file("etc/sanlab/functions", (GUEST / "functions").read_bytes())
    cpio.file("init", (GUEST / "init").read_bytes(), 0o755)
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.file("etc/group", b"root:x:0:\n")
    (directory / "initrd.gz").write_bytes(cpio.gzipped())
    shutil.copyfile(root / "boot" / f"vmlinuz-{kver}", directory / "vmlinuz")
    shutil.rmtree(root)
    (directory / "accel").unlink(missing_ok=True)
    stamp.write_text(json.dumps(manifest, indent=1))
    size = (directory / "initrd.gz").stat().st_size
    say(f"guest built in {directory}: kernel {kver}, initramfs {size >> 10} KiB, {len(order)} modules")
    say(f"accelerator: {accelerator(directory, say)}")
    return manifest


def guest_portal(portal: str) -> str:
    """The portal as the guest dials it: the host's 127.0.0.1 is 10.0.2.2 under -netdev user."""
    host, sep, port = portal.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise VmError(f"--portal {portal!r}: expected HOST:PORT")
    if host in ("127.0.0.1", "localhost"):
        return f"10.0.2.2:{port}"
    if host.startswith("127."):
        raise VmError(f"--portal {portal}: the guest reaches only 127.0.0.1 of the host's loopback (as 10.0.2.2)")
    return f"{host}:{port}"


def _secret(opt: str, value: str | None) -> tuple[str, str]:
    if value is None:
        return "", ""
    user, sep, secret = value.partition(":")
    if not sep or not user or not secret:
        raise VmError(f"{opt} {value!r}: expected USER:SECRET")
    if any(c in value for c in "'\n"):
        raise VmError(f"{opt}: quotes and newlines are not allowed")
    return user, secret


PROBE_TIMEOUT = 30.0
"""Seconds a KVM guest gets to print READY in the accelerator probe (it needs 1-3 s when KVM works)."""


def kvm_opens() -> bool:
    """/dev/kvm can be opened (whether a guest then boots under KVM is tried after each build)."""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


def accelerator(directory: Path, say: Callable[[str], None] = print) -> str:
    """``kvm`` when /dev/kvm opens and a KVM guest really boots, else ``tcg``.

    /dev/kvm can open and still not run this guest (nested under another hypervisor, KVM may lack
    the CPUID features QEMU asks for and the kernel hangs before its first line), so the first run
    after a build boots the guest once under KVM with a bounded wait; the answer is kept in the
    build directory (``accel``).
    """
    kept = directory / "accel"
    if kept.exists():
        return kept.read_text().strip()
    accel = "tcg"
    if kvm_opens():
        guest = start("127.0.0.1:1", "iqn.2026-11.org.sanlab:probe", "", directory, accel="kvm", probe=True)
        try:
            guest.wait_for(EXIT, PROBE_TIMEOUT)
            accel = "kvm"
        except VmError:
            say(f"/dev/kvm opens but a KVM guest did not boot within {PROBE_TIMEOUT:.0f} s: using TCG")
        finally:
            guest.close()
    kept.write_text(accel + "\n")
    return accel


def guest_params(portal: str, target: str, chap: str | None, mutual: str | None, initiator: str,
                 probe: bool = False) -> str:
    """The run's /lab/params (shell assignments the guest's /init sources), the options checked."""
    if mutual and not chap:
        raise VmError("--mutual needs --chap (mutual CHAP is on top of the initiator's CHAP)")
    gportal = guest_portal(portal)
    cu, cs = _secret("--chap", chap)
    mu, ms = _secret("--mutual", mutual)
    for name, value in (("--target", target), ("--initiator", initiator)):
        if not re.fullmatch(r"[A-Za-z0-9.:\-]+", value):
            raise VmError(f"{name} {value!r}: not an iSCSI name")
    params = (f"PORTAL='{gportal}'\nTARGET='{target}'\nINITIATOR='{initiator}'\n"
              f"CHAP_USER='{cu}'\nCHAP_SECRET='{cs}'\nMUTUAL_USER='{mu}'\nMUTUAL_SECRET='{ms}'\n"
              f"PROBE='{'1' if probe else ''}'\n")
    return params


@dataclass
class Guest:
    """One running guest: its QEMU process and its console log."""
    proc: subprocess.Popen[bytes]
    log: Path
    started: float
    accel: str
    tmp: tempfile.TemporaryDirectory[str]
    read_pos: int = 0
    ready_after: float | None = None
    rc: int | None = None

    def console(self) -> str:
        """What the guest printed on its serial console so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def follow(self, sink: IO[str] | None) -> str:
        """New console text since the last call (also written to ``sink``)."""
        text = self.console()
        new, self.read_pos = text[self.read_pos:], len(text)
        if sink is not None and new:
            sink.write(new.replace("\r", ""))
            sink.flush()
        return new

    def wait_for(self, marker: str, timeout: float, sink: IO[str] | None = None) -> str:
        """Wait (bounded) for a console line starting with ``marker``; returns that line."""
        deadline = time.monotonic() + timeout
        while True:
            self.follow(sink)
            for line in self.console().splitlines():
                if marker in line:  # the firmware's escape codes may share its line
                    return line[line.index(marker):].strip()
            if self.proc.poll() is not None:
                raise VmError(f"QEMU exited ({self.proc.returncode}) before {marker!r}:\n{self._tail()}")
            if time.monotonic() > deadline:
                raise VmError(f"no {marker!r} on the guest's console within {timeout:.0f} s:\n{self._tail()}")
            time.sleep(0.1)

    def _tail(self) -> str:
        err = Path(self.tmp.name) / "qemu.err"
        return (self.console()[-3000:] + (err.read_text(errors="replace") if err.exists() else "")).strip()

    def kill(self) -> None:
        """Stop QEMU now (SIGKILL to its pid), as a power cut."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        """Stop the guest (QEMU killed by pid)."""
        self.kill()
        self.tmp.cleanup()


def start(portal: str, target: str, script: str, directory: Path = DEFAULT_DIR, chap: str | None = None,
          mutual: str | None = None, initiator: str = DEFAULT_INITIATOR, log: Path | None = None,
          memory_mb: int = 512, accel: str | None = None, probe: bool = False) -> Guest:
    """Boot the guest for one run (the build must exist: :func:`build`)."""
    params = guest_params(portal, target, chap, mutual, initiator, probe)
    kernel, initrd = directory / "vmlinuz", directory / "initrd.gz"
    if not initrd.exists():
        raise VmError(f"no guest in {directory}: run lab/vm build first")
    tmp = tempfile.TemporaryDirectory(prefix="sanlab-vm-")
    run = Cpio()
    run.file("lab/params", params.encode())
    run.file("lab/script", script.encode(), 0o755)
    run_initrd = Path(tmp.name) / "initrd.gz"
    # The kernel unpacks concatenated archives in order: the run's files join the build's.
    run_initrd.write_bytes(initrd.read_bytes() + run.gzipped())
    log = log or Path(tmp.name) / "console.log"
    log.unlink(missing_ok=True)
    accel = accel or accelerator(directory)
    cmd = ["qemu-system-x86_64", "-machine", f"q35,accel={accel}", "-m", str(memory_mb), "-smp", "1",
           "-nographic", "-monitor", "none", "-serial", f"file:{log}", "-no-reboot",
           "-kernel", str(kernel), "-initrd", str(run_initrd),
           "-append", "console=ttyS0 panic=-1 loglevel=4",
           "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile="]
    # QEMU's own messages go to a file: a pipe nobody reads could fill and stall it.
    with open(Path(tmp.name) / "qemu.err", "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    return Guest(proc, log, time.monotonic(), accel, tmp)


def run(portal: str, target: str, script: str, directory: Path = DEFAULT_DIR, chap: str | None = None,
        mutual: str | None = None, initiator: str = DEFAULT_INITIATOR, log: Path | None = None,
        boot_timeout: float = BOOT_TIMEOUT, timeout: float = RUN_TIMEOUT,
        sink: IO[str] | None = None) -> tuple[int, str, float]:
    """Boot, log in, run ``script``, power off: (the script's exit code, console text, boot seconds)."""
    guest = start(portal, target, script, directory, chap, mutual, initiator, log)
    try:
        guest.wait_for(READY, boot_timeout, sink)
        booted = time.monotonic() - guest.started
        line = guest.wait_for(EXIT, max(1.0, timeout - booted), sink)
        rc = int(line.split()[1])
        try:
            guest.proc.wait(timeout=POWEROFF_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass  # close() kills it
        guest.follow(sink)
        return rc, guest.console(), booted
    finally:
        guest.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``lab/vm build|run``: the guest script's exit status (0 when it passed); 2 for bad options or a
    failed build or boot."""
    p = argparse.ArgumentParser(prog="lab/vm", description="open-iscsi (the Linux kernel initiator) in a QEMU guest")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="make the guest (kernel, initramfs) from Debian packages")
    b.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"build directory (default {DEFAULT_DIR})")
    b.add_argument("--force", action="store_true", help="rebuild even when up to date")
    r = sub.add_parser("run", help="boot the guest, log in to a portal, run a script inside")
    r.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    r.add_argument("--portal", required=True, help="HOST:PORT of the array (127.0.0.1 is reached as 10.0.2.2)")
    r.add_argument("--target", required=True, help="target IQN")
    r.add_argument("--chap", metavar="USER:SECRET", help="CHAP: what the initiator answers")
    r.add_argument("--mutual", metavar="USER:SECRET", help="mutual CHAP: what the target must answer")
    r.add_argument("--initiator", default=DEFAULT_INITIATOR, help=f"initiator IQN (default {DEFAULT_INITIATOR})")
    r.add_argument("--script", type=Path, default=DEFAULT_SCRIPT, help="shell script run in the guest (sh -e)")
    r.add_argument("--log", type=Path, help="keep the serial console here")
    r.add_argument("--boot-timeout", type=float, default=BOOT_TIMEOUT)
    r.add_argument("--timeout", type=float, default=RUN_TIMEOUT, help="seconds for the whole run")
    a = p.parse_args(argv)

    def say(msg: str) -> None:
        print(f"lab/vm: {msg}", flush=True)

    try:
        if a.cmd == "build":
            build(a.dir, say, a.force)
            return 0
        try:
            script = a.script.read_text()
        except OSError as e:
            raise VmError(f"--script {a.script}: {e.strerror}") from e
        guest_params(a.portal, a.target, a.chap, a.mutual, a.initiator)
        if not (a.dir / "initrd.gz").exists():
            build(a.dir, say)
        rc, _, booted = run(a.portal, a.target, script, a.dir, a.chap, a.mutual, a.initiator, a.log,
                            a.boot_timeout, a.timeout, sys.stdout)
        say(f"guest ready {booted:.1f} s after QEMU started ({accelerator(a.dir).upper()}); script exit {rc}")
        return rc
    except VmError as e:
        print(f"lab/vm: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
