"""A private Postfix instance for the benchmarks: the real `smtpd` on 127.0.0.1 (it offers PIPELINING and
CHUNKING, which smtp-sink does not), every message discarded by the `discard` transport.

Its configuration, queue and log live in a temporary folder and its master runs under that
configuration only (`postfix -c DIR`); the system's Postfix, configured or not, is not touched.
Postfix logs to syslog unless told otherwise: here to a file in the folder (`maillog_file`), which
also counts the messages it took.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from postfix_sink import HOST, port_is_free

_SERVICES = """\
{host}:{port} inet n - n - - smtpd
pickup    unix  n  -  n  60  1  pickup
cleanup   unix  n  -  n  -   0  cleanup
qmgr      unix  n  -  n  300 1  qmgr
rewrite   unix  -  -  n  -   -  trivial-rewrite
bounce    unix  -  -  n  -   0  bounce
defer     unix  -  -  n  -   0  bounce
trace     unix  -  -  n  -   0  bounce
verify    unix  -  -  n  -   1  verify
flush     unix  n  -  n  1000? 0 flush
proxymap  unix  -  -  n  -   -  proxymap
showq     unix  n  -  n  -   -  showq
error     unix  -  -  n  -   -  error
retry     unix  -  -  n  -   -  error
discard   unix  -  -  n  -   -  discard
anvil     unix  -  -  n  -   1  anvil
scache    unix  -  -  n  -   1  scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixSmtpd:
    """Run a throwaway Postfix whose smtpd listens on 127.0.0.1:`port` and discards every message; its
    `folder`, and the folders above it, must be open to the postfix user."""

    def __init__(self, port: int, folder: Path):
        self.port = port
        self.folder = folder
        self.config = folder / "etc"

    def __enter__(self) -> PostfixSmtpd:
        if not shutil.which("postfix"):
            sys.exit("postfix is missing (apt-get install postfix)")
        data, queue = self.folder / "data", self.folder / "spool"
        for path in (self.config, data, queue):
            path.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        shutil.chown(data, "postfix")
        (self.config / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
maillog_file = {self.folder / 'maillog'}
maillog_file_prefixes = {self.folder}
inet_interfaces = {HOST}
inet_protocols = ipv4
myhostname = bench.localdomain
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = discard:bench
relay_transport = discard:bench
local_transport = discard:bench
virtual_transport = discard:bench
in_flow_delay = 0s
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 100
""")
        (self.config / "master.cf").write_text(_SERVICES.format(host=HOST, port=self.port))
        started = subprocess.run(["postfix", "-c", str(self.config), "start"], capture_output=True, timeout=60)
        if started.returncode:
            sys.exit(f"Postfix did not start: {self.log_tail()}")
        deadline = time.monotonic() + 20
        while port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        if port_is_free(self.port):
            self.stop()
            sys.exit(f"Postfix did not start: {self.log_tail()}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.config), "stop"], capture_output=True, timeout=60, check=False)

    def messages_taken(self) -> int:
        """Count the messages the discard transport has taken so far (one log line each)."""
        log = self.folder / "maillog"
        return log.read_text(errors="replace").count("status=sent (bench)") if log.exists() else 0

    def log_tail(self) -> str:
        log = self.folder / "maillog"
        return "\n".join(log.read_text(errors="replace").splitlines()[-5:]) if log.exists() else "(no log)"
