"""Run one client process against the sink and measure it from outside.

The client's CPU time and peak RSS come from `os.wait4` (that child's own rusage). The sending
phase is seen from the sink, the same way for every client: from the first poll (every 10 ms)
that sees a new message counted to the last poll that sees the count go up; its rate is the
messages counted between those two polls over the time between them. The CPUs are sampled from
/proc/stat to report hypervisor steal and how many cores other processes kept busy meanwhile.
"""
from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from postfix_sink import SinkCounters, SmtpSink

_POLL_SECONDS = 0.01
_Seen = tuple[float, int]   # (monotonic time, sink message count) at one poll


@dataclass(frozen=True)
class _Exit:
    status: int
    usage: resource.struct_rusage
    first: _Seen | None    # the first poll that saw a new message
    last: _Seen | None     # the last poll that saw the count change
    terminated: bool
_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class CpuSample:
    """Jiffies summed over all CPUs: steal, total, and idle+iowait."""

    steal: int
    total: int
    idle: int


@dataclass(frozen=True)
class ClientRun:
    """What one client process did, as measured from outside it."""

    returncode: int
    timed_out: bool
    process_seconds: float         # start to exit of the whole process
    phase_seconds: float | None    # sink-side: first poll seeing a new message to the last seeing one more
    phase_messages: int            # messages the sink counted between those two polls
    sink_messages: int             # messages the sink counted during the run
    cpu_seconds: float             # the client's user+system CPU
    peak_rss_kb: int
    sink_cpu_seconds: float
    steal_percent: float
    other_cores: float             # cores kept busy by processes other than client and sink
    output_tail: str


def cpu_sample() -> CpuSample:
    """Read the aggregate CPU line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return CpuSample(steal=values[7], total=sum(values[:8]), idle=values[3] + values[4])


def busy_other_cores(start: CpuSample, end: CpuSample, known_cpu_seconds: float) -> tuple[float, float]:
    """Return (steal %, cores busy beyond `known_cpu_seconds`) between two samples."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = end.total - start.total
    if total <= 0:
        return 0.0, 0.0
    busy = (total - (end.idle - start.idle) - (end.steal - start.steal)) / ticks
    wall = total / ticks / os.cpu_count()
    return 100 * (end.steal - start.steal) / total, max(0.0, (busy - known_cpu_seconds) / wall)


def wait_for_quiet(max_seconds: float) -> float:
    """Wait, at most `max_seconds`, until other processes keep under 0.2 cores busy; return the last figure."""
    deadline = time.monotonic() + max_seconds
    while True:
        start = cpu_sample()
        time.sleep(2)
        _, others = busy_other_cores(start, cpu_sample(), 0.0)
        if others <= 0.2 or time.monotonic() >= deadline:
            return others


def run_client(command: list[str], sink: SmtpSink, deadline_seconds: float, log_path: Path,
               env: dict[str, str] | None = None) -> ClientRun:
    """Run `command` until it exits (TERM after `deadline_seconds`, KILL 3 s later) and measure it."""
    before = sink.counters()
    stat_start = cpu_sample()
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    try:
        exit_ = _watch(process, sink, before, started + deadline_seconds)
    except BaseException:
        _end(process)
        raise
    ended = time.monotonic()
    time.sleep(0.2)   # let the sink print its last counters
    after = sink.counters()
    client_cpu = exit_.usage.ru_utime + exit_.usage.ru_stime
    sink_cpu = after.cpu_seconds - before.cpu_seconds
    steal, others = busy_other_cores(stat_start, cpu_sample(), client_cpu + sink_cpu)
    first, last = exit_.first, exit_.last
    phase = last[0] - first[0] if first and last and last[0] > first[0] else None
    return ClientRun(
        returncode=os.waitstatus_to_exitcode(exit_.status), timed_out=exit_.terminated,
        process_seconds=ended - started, phase_seconds=phase,
        phase_messages=last[1] - first[1] if first and last and phase else 0,
        sink_messages=after.messages - before.messages, cpu_seconds=client_cpu,
        peak_rss_kb=exit_.usage.ru_maxrss, sink_cpu_seconds=sink_cpu, steal_percent=steal,
        other_cores=others, output_tail=_tail(log_path))


def _watch(process: subprocess.Popen[bytes], sink: SmtpSink, before: SinkCounters,
           deadline: float) -> _Exit:
    first: _Seen | None = None
    last: _Seen | None = None
    terminated_at: float | None = None
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        now = time.monotonic()
        count = sink.counters().messages
        if first is None and count > before.messages:
            first = last = (now, count)
        elif last is not None and count != last[1]:
            last = (now, count)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return _Exit(status, usage, first, last, terminated_at is not None)
        if terminated_at is None and now >= deadline:
            process.terminate()
            terminated_at = now
        elif terminated_at is not None and now >= terminated_at + _GRACE_SECONDS:
            process.kill()
            terminated_at = float("inf")   # KILL once, then wait for the exit
        time.sleep(_POLL_SECONDS)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int = 5) -> str:
    return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
