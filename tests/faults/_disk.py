"""A small ext4 file system of its own (a file on a loop device) that a test can fill or make read-only.

Filling it writes a ballast file until the kernel answers ENOSPC; freeing deletes it. Making it read-only is
what the kernel does to an ext4 file system that hits an error with `errors=remount-ro`: the test triggers
such an error through sysfs (`trigger_fs_error`), and the file system turns read-only under the open files,
as it would in production. Repairing it unmounts it, runs e2fsck and mounts it again. Mounting needs root
(CAP_SYS_ADMIN) and loop devices; `mount_or_skip` skips the test, saying why, where the machine has neither.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["LoopFilesystem"]

_CHUNKS = (1 << 20, 1 << 16, 1 << 12)


class LoopFilesystem:
    """An ext4 file system in `directory/image`, mounted at `directory/mnt`."""

    def __init__(self, directory: Path, *, size_mb: int = 32) -> None:
        self.image = directory / "image"
        self.mount_point = directory / "mnt"
        self.ballast = self.mount_point / "ballast"
        self._size_mb = size_mb
        self._mounted = False

    def mount_or_skip(self) -> LoopFilesystem:
        """Create and mount the file system; skip the test when this machine cannot."""
        if os.geteuid() != 0:
            pytest.skip(
                "needs root to mount a loop device (a file system the test can fill or make read-only)"
            )
        for tool in ("mkfs.ext4", "e2fsck", "mount", "umount"):
            if shutil.which(tool) is None:
                pytest.skip(f"{tool} is not installed (e2fsprogs, util-linux)")
        self.mount_point.mkdir(parents=True, exist_ok=True)
        with self.image.open("wb") as image:
            image.truncate(self._size_mb << 20)
        _run("mkfs.ext4", "-q", "-F", "-m", "0", str(self.image))
        mounted = self._mount(check=False)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a loop device here: {mounted.stderr.strip()}")
        return self

    def _mount(self, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = _run(
            "mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mount_point), check=check
        )
        self._mounted = done.returncode == 0
        return done

    def unmount(self) -> None:
        """Unmount (the loop device goes with it); safe to call more than once."""
        if not self._mounted:
            return
        if _run("umount", str(self.mount_point), check=False).returncode != 0:
            _run("umount", "--lazy", str(self.mount_point))  # something still holds a file: detach anyway
        self._mounted = False

    @property
    def read_only(self) -> bool:
        """Whether a new file is refused as on a read-only file system.

        ext4 made read-only by an error does not say so in statvfs (ST_RDONLY) on recent kernels; it
        answers EROFS to every write.
        """
        probe = self.mount_point / "probe"
        try:
            probe.touch()
        except OSError as error:
            return error.errno == errno.EROFS
        probe.unlink()
        return False

    def fill(self) -> None:
        """Write a ballast file until not one more block fits."""
        ballast = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in _CHUNKS:
                chunk = b"\0" * size
                with contextlib.suppress(OSError):
                    while True:
                        os.write(ballast, chunk)
            with contextlib.suppress(OSError):
                os.fsync(ballast)
        finally:
            os.close(ballast)
        probe = self.mount_point / "probe"
        with pytest.raises(OSError, match="No space left") as refused:
            probe.write_bytes(b"\0" * _CHUNKS[-1])
        assert refused.value.errno == errno.ENOSPC
        probe.unlink(missing_ok=True)

    def free(self) -> None:
        """Delete the ballast."""
        self.ballast.unlink()

    def fail_read_only(self) -> None:
        """Make ext4 hit an error, so that it remounts itself read-only (errors=remount-ro)."""
        device = _run("findmnt", "--noheadings", "--output", "SOURCE", str(self.mount_point)).stdout.strip()
        trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
        trigger.write_text("stord fault test\n")
        assert self.read_only, "ext4 did not turn read-only after an error"

    def repair(self) -> None:
        """Unmount, check and fix the file system with e2fsck, and mount it writable again."""
        self.unmount()
        checked = _run("e2fsck", "-f", "-y", str(self.image), check=False)
        assert checked.returncode in (0, 1), f"e2fsck could not fix the file system:\n{checked.stdout}"
        self._mount()


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=60)
