"""A link the test controls between this host and a server: a network namespace of its own, and a delay proxy.

`IsolatedHost` is a network namespace that the test creates, joined to this host by a veth pair on a /30 of
its own (10.213.X.0/30: the host side .1, the namespace .2). Servers started inside it (`command` prefixes
their command line) are reached at `address` through the veth only, so nftables rules in the namespace
(`partition`, `lose`) act on exactly that traffic: a partition drops every packet silently, as a cut cable
or a dead switch does, so connections hang rather than being refused. Nothing but loopback and the test's own
namespaces is ever addressed, and deleting the namespace removes its veth pair and rules with it.

`DelayProxy` is a loopback TCP proxy that holds every chunk for a while before passing it on: this kernel has
no `sch_netem`, so a slow link is made in user space. Chained in front of an `IsolatedHost` it adds delay to
a lossy link.

`require_namespaces` skips a test where the machine cannot create namespaces (not root, no `ip`), and
installs nftables with apt-get when `nft` is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness._system import ensure_installed, free_port

__all__ = ["DelayProxy", "IsolatedHost", "check_host_intact", "isolated_host", "require_namespaces"]

_TABLE = "stord_fault"
"""The nftables table of the faults; it lives in the namespace, so the host's own rules are never touched."""

_SUBNET = "10.213"
_numbers = itertools.count((os.getpid() * 7) % 200)


def require_namespaces() -> Path:
    """Return the `nft` binary; skip the test where network namespaces cannot be made here."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns) and nftables rules")
    if shutil.which("ip") is None:
        pytest.skip("ip (iproute2) is not installed")
    return ensure_installed("nft", [], "nftables")


class IsolatedHost:
    """A network namespace reached over a veth pair; see the module's docstring."""

    def __init__(self) -> None:
        self._nft = str(require_namespaces())
        self.name, number = self._free_name()
        self.host_address = f"{_SUBNET}.{number}.1"
        self.address = f"{_SUBNET}.{number}.2"
        self._veth = f"sd{os.getpid() % 10**7}n{number}"
        self._created = False

    @staticmethod
    def _free_name() -> tuple[str, int]:
        _remove_orphans()
        taken = _run("ip", "-o", "-4", "addr", "show").stdout
        existing = set(_run("ip", "netns", "list").stdout.split())
        for _ in range(250):
            number = next(_numbers) % 250 + 1
            name = f"stord-{os.getpid()}-{number}"
            if f"{_SUBNET}.{number}." not in taken and name not in existing:
                return name, number
        raise RuntimeError(f"no free /30 left in {_SUBNET}.0.0/16 for a test namespace")

    def create(self) -> IsolatedHost:
        """Create the namespace, its veth pair, addresses and an empty nftables table."""
        self._created = True
        _run("ip", "netns", "add", self.name)
        inside = f"{self._veth}i"
        _run("ip", "link", "add", self._veth, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", self.name)
        _run("ip", "addr", "add", f"{self.host_address}/30", "dev", self._veth)
        _run("ip", "link", "set", self._veth, "up")
        _run(*self.command, "ip", "addr", "add", f"{self.address}/30", "dev", inside)
        _run(*self.command, "ip", "link", "set", inside, "up")
        _run(*self.command, "ip", "link", "set", "lo", "up")
        self._nft_apply(
            f"add table inet {_TABLE}\n"
            f"add chain inet {_TABLE} input {{ type filter hook input priority 0; policy accept; }}\n"
            f"add chain inet {_TABLE} output {{ type filter hook output priority 0; policy accept; }}\n"
        )
        return self

    @property
    def command(self) -> list[str]:
        """The prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def partition(self) -> None:
        """Drop every packet on the veth, both ways, without a word (no RST, no ICMP)."""
        self._set_rules("drop")

    def lose(self, percent: int) -> None:
        """Drop `percent` % of the packets on the veth, each way, at random."""
        self._set_rules(f"numgen random mod 100 < {percent} drop")

    def heal(self) -> None:
        """Let every packet through again."""
        self._set_rules(None)

    def _set_rules(self, verdict: str | None) -> None:
        script = f"flush chain inet {_TABLE} input\nflush chain inet {_TABLE} output\n"
        if verdict is not None:
            inside = f"{self._veth}i"
            script += (
                f'add rule inet {_TABLE} input iifname "{inside}" {verdict}\n'
                f'add rule inet {_TABLE} output oifname "{inside}" {verdict}\n'
            )
        self._nft_apply(script)

    def _nft_apply(self, script: str) -> None:
        _run(*self.command, self._nft, "-f", "-", input=script)

    def close(self) -> None:
        """Delete the namespace, its rules and the veth pair; safe to call more than once."""
        if not self._created:
            return
        self._created = False
        with contextlib.suppress(subprocess.CalledProcessError):
            _run(*self.command, self._nft, "delete", "table", "inet", _TABLE)
        with contextlib.suppress(subprocess.CalledProcessError):
            _run("ip", "link", "delete", self._veth)
        _run("ip", "netns", "delete", self.name)

    def assert_gone(self) -> None:
        """Fail when the namespace or the host's end of the veth pair is still there."""
        assert self.name not in _run("ip", "netns", "list").stdout.split(), f"namespace {self.name} left"
        links = _run("ip", "-o", "link", "show").stdout
        assert f" {self._veth}@" not in links, f"veth {self._veth} left"
        assert f" {self._veth}:" not in links, f"veth {self._veth} left"


@contextlib.contextmanager
def isolated_host() -> Iterator[IsolatedHost]:
    """Create an `IsolatedHost` and remove it afterwards, even when the test fails."""
    host = IsolatedHost()
    try:
        yield host.create()
    finally:
        host.close()
        host.assert_gone()
        check_host_intact()


def check_host_intact(mount_points: tuple[Path, ...] = ()) -> None:
    """Fail when a fault harmed the host: /dev/null must be a character device, `mount_points` unmounted."""
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null is no longer a character device"
    mounted = {line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()}
    left = [str(point) for point in mount_points if str(point) in mounted]
    assert not left, f"still mounted: {left}"


class DelayProxy:
    """Forwards 127.0.0.1:`port` to `target`, holding every chunk `delay` seconds each way (in order)."""

    def __init__(self, target_host: str, target_port: int, *, delay: float) -> None:
        self.delay = delay
        self.port = free_port()
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> DelayProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(10)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Read chunks as they come; write each `delay` after it arrived, so delay adds latency, not gaps."""
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await held.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not chunk:
                    return
                sink.write(chunk)
                await sink.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await source.read(65536)
                held.put_nowait((time.monotonic() + self.delay, chunk))
                if not chunk:
                    break
            await delivering
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            delivering.cancel()
            sink.close()

    def stop(self) -> None:
        """Close the listener and every connection; stop the thread."""

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


def _remove_orphans() -> None:
    """Delete the namespaces of test processes that died without cleaning up (killed with SIGKILL, say)."""
    for name in _run("ip", "netns", "list").stdout.split():
        prefix, _, rest = name.partition("-")
        pid = rest.partition("-")[0]
        if prefix != "stord" or not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        if _run("ip", "netns", "pids", name).stdout.strip():  # something still runs in it: not ours to end
            continue
        with contextlib.suppress(subprocess.CalledProcessError):
            _run("ip", "netns", "delete", name)  # its veth pair and rules go with it


class _CommandFailed(subprocess.CalledProcessError):
    """A failed command whose message carries what it wrote to stderr (`ip` and `nft` explain themselves)."""

    def __str__(self) -> str:
        return f"{super().__str__().rstrip('.')}: {self.stderr}"


def _run(*command: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30, input=input)
    if done.returncode != 0:
        raise _CommandFailed(done.returncode, command, done.stdout, done.stderr.strip())
    return done
