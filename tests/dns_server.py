"""A real DNS server on 127.0.0.1 for tests: Debian's dnsmasq, answering only the records a test gives.

    with dns_server(txt={"s1._domainkey.example.org": "v=DKIM1; k=rsa; p=..."},
                    mx={"example.org": [(10, "mx.example.org")]}, a={"mx.example.org": ["192.0.2.25"]}) as server:
        server.resolver().resolve("s1._domainkey.example.org", "TXT")

Every zone a record names (its last two labels) is served as local, so a name the test did not give is
NXDOMAIN, never forwarded: dnsmasq reads no resolv.conf and no hosts file. The test is skipped with a
message where dnsmasq is missing (`.ci/run` installs Debian's dnsmasq-base).
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.resolver
import pytest

HOST = "127.0.0.1"
_START_SECONDS = 10.0
_TXT_STRING_BYTES = 255     # one character-string of a TXT record (RFC 1035 3.3)


@dataclass(frozen=True)
class DnsServer:
    host: str
    port: int

    def resolver(self, *, timeout_seconds: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this server only."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.host]
        resolver.port = self.port
        resolver.lifetime = resolver.timeout = timeout_seconds
        return resolver

    def txt(self, name: str) -> bytes | None:
        """The TXT record at `name`, its strings joined, as dkimpy's `dnsfunc` wants it (None: no record)."""
        try:
            answer = self.resolver().resolve(name.rstrip("."), "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(b"".join(record.strings) for record in answer)

    def dkimpy_dnsfunc(self, name: bytes, timeout: float = 5) -> bytes | None:
        return self.txt(name.decode("ascii"))


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _quoted_strings(text: str) -> str:
    """A TXT value as dnsmasq's --txt-record wants it: quoted strings of at most 255 bytes each."""
    data = text.encode("ascii")
    chunks = [data[i:i + _TXT_STRING_BYTES] for i in range(0, len(data), _TXT_STRING_BYTES)] or [b""]
    return ",".join('"' + chunk.decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks)


def _zone(name: str) -> str:
    return ".".join(name.rstrip(".").split(".")[-2:])


@contextlib.contextmanager
def dns_server(*, txt: Mapping[str, str | Sequence[str]] | None = None,
               mx: Mapping[str, Sequence[tuple[int, str]]] | None = None,
               a: Mapping[str, Sequence[str]] | None = None) -> Iterator[DnsServer]:
    """Run dnsmasq on a free loopback port serving exactly these records; stop it on leaving."""
    binary = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)
    if binary is None:
        pytest.skip("dnsmasq is not installed (Debian's dnsmasq-base; .ci/run installs it)")
    txt, mx, a = dict(txt or {}), dict(mx or {}), dict(a or {})
    zones = sorted({_zone(name) for name in (*txt, *mx, *a)})
    with tempfile.TemporaryDirectory(prefix="dnsmasq-") as folder:
        conf = Path(folder, "dnsmasq.conf")
        lines = ["no-resolv", "no-hosts", "bind-interfaces", f"listen-address={HOST}", "except-interface=*",
                 "log-facility=" + str(Path(folder, "log")), "cache-size=0"]
        lines += [f"local=/{zone}/" for zone in zones]
        for name, values in txt.items():
            for value in [values] if isinstance(values, str) else values:
                lines.append(f"txt-record={name},{_quoted_strings(value)}")
        for domain, hosts in mx.items():
            lines += [f"mx-host={domain},{host},{preference}" for preference, host in hosts]
        for name, addresses in a.items():
            lines.append(f"host-record={name},{','.join(addresses)}")
        conf.write_text("\n".join(lines) + "\n")
        for _ in range(3):      # another process may take the free port before dnsmasq binds it
            port = _free_udp_port()
            process = subprocess.Popen(
                [binary, "--keep-in-foreground", f"--conf-file={conf}", f"--port={port}", "--pid-file=",
                 f"--user={pwd.getpwuid(os.getuid()).pw_name}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            server = DnsServer(HOST, port)
            if _answers(server, process):
                break
            process.kill()
            process.wait()
        else:
            raise RuntimeError(f"dnsmasq did not start: {process.stderr.read().decode(errors='replace')[-500:]}"
                               if process.stderr else "dnsmasq did not start")
        try:
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr:
                process.stderr.close()


def _answers(server: DnsServer, process: subprocess.Popen[bytes]) -> bool:
    """Wait (bounded) until the server answers a query; False when it exited or never did."""
    deadline = time.monotonic() + _START_SECONDS
    resolver = server.resolver(timeout_seconds=0.2)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            resolver.resolve("probe.invalid", "A")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return True
        except dns.exception.Timeout:
            continue
        return True
    return False
