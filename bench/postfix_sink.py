"""Postfix's `smtp-sink` on 127.0.0.1 for the send benchmark, and the setup it needs.

Only the `smtp-sink` and `smtp-source` binaries of the Debian `postfix` package are used. The
package is installed unconfigured ("No configuration": no main.cf, so the daemon cannot start),
with service starts denied during the install and the service disabled afterwards.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"   # loopback only, never configurable
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_MESSAGES = re.compile(rb"mesg=(\d+)")   # -c prints "sess=S quit=Q mesg=M\r" on every change


def ensure_postfix_tools() -> None:
    """Install `postfix` (unconfigured, disabled) when smtp-sink or smtp-source is missing."""
    if all(os.access(path, os.X_OK) for path in (SMTP_SINK, SMTP_SOURCE)):
        return
    if os.geteuid() != 0:
        sys.exit(f"{SMTP_SINK} or {SMTP_SOURCE} is missing; run once as root to install postfix")
    print("# installing postfix for smtp-sink/smtp-source, unconfigured and disabled", file=sys.stderr)
    made_policy = not POLICY_RC_D.exists()
    if made_policy:
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        selections = ("postfix postfix/main_mailer_type select No configuration\n"
                      "postfix postfix/mailname string localhost\n")
        subprocess.run(["debconf-set-selections"], input=selections, text=True, check=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"],
                       check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    finally:
        if made_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    subprocess.run(["update-rc.d", "postfix", "disable"], capture_output=True, check=False)
    if shutil.which("systemctl"):
        subprocess.run(["systemctl", "disable", "postfix"], capture_output=True, check=False)


def check_no_mta() -> None:
    """Refuse to run while a Postfix master daemon runs or anything listens on port 25."""
    if Path("/var/spool/postfix/pid/master.pid").exists() and shutil.which("postfix"):
        status = subprocess.run(["postfix", "status"], capture_output=True, check=False)
        if status.returncode == 0:
            sys.exit("the postfix master daemon is running; stop it (postfix stop) before benchmarking")
    if not port_is_free(25):
        sys.exit("something listens on port 25; this benchmark expects no MTA")


def port_is_free(port: int) -> bool:
    """Return whether nothing accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, port)) != 0


def free_port(start: int) -> int:
    """Return the first port from `start` (20 tried) with nothing listening on it."""
    for port in range(start, start + 20):
        if port_is_free(port):
            return port
    sys.exit(f"no free port found in {start}..{start + 19}")


@dataclass(frozen=True)
class SinkCounters:
    """The sink's running total of messages accepted, and its CPU seconds."""

    messages: int
    cpu_seconds: float


class SmtpSink:
    """Run `smtp-sink -c` on 127.0.0.1:`port` under `timeout`, counting into a file in `workdir`."""

    def __init__(self, port: int, workdir: Path, max_seconds: int) -> None:
        self.port = port
        self._out = workdir / "sink.out"
        self._err = workdir / "sink.err"
        self._max_seconds = max_seconds
        self._wrapper: subprocess.Popen[bytes] | None = None
        self._sink_pid: int | None = None

    def __enter__(self) -> SmtpSink:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []   # as root smtp-sink insists on -u
        with self._out.open("wb") as out, self._err.open("wb") as err:
            # The `timeout` wrapper ends the sink even if this script is killed outright.
            self._wrapper = subprocess.Popen(
                ["timeout", "-s", "TERM", str(self._max_seconds), SMTP_SINK, *user, "-c",
                 f"{HOST}:{self.port}", "1024"], stdout=out, stderr=err, start_new_session=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (self._sink_pid is None or port_is_free(self.port)):
            self._sink_pid = _child_of(self._wrapper.pid)
            time.sleep(0.05)
        if self._sink_pid is None or port_is_free(self.port):
            self.stop()
            sys.exit(f"smtp-sink did not start: {self._err.read_text(errors='replace')}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """Return the PID of smtp-sink itself (not of its `timeout` wrapper)."""
        assert self._sink_pid is not None
        return self._sink_pid

    def counters(self) -> SinkCounters:
        """Return the latest counters the sink printed and its CPU time so far."""
        with self._out.open("rb") as out:
            out.seek(max(0, self._out.stat().st_size - 256))
            found = _MESSAGES.findall(out.read())
        return SinkCounters(int(found[-1]) if found else 0, process_cpu_seconds(self.pid))

    def stop(self) -> None:
        """Stop the sink and its wrapper, by PID: TERM, then KILL after 3 seconds."""
        if self._wrapper is not None:
            stop_process(self._wrapper)   # `timeout` passes the TERM on to the sink
        if self._sink_pid is not None:
            stop_pid(self._sink_pid)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a child started by this script: TERM, then KILL after 3 seconds, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_pid(pid: int) -> None:
    """Send TERM to a grandchild `pid`, wait up to 3 seconds, then KILL; a gone process is fine."""
    try:
        os.kill(pid, 15)
        for _ in range(30):
            time.sleep(0.1)
            os.kill(pid, 0)
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def process_cpu_seconds(pid: int) -> float:
    """Return the user+system CPU seconds of the running process `pid` (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child_of(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None
