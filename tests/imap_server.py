"""A real IMAP server on 127.0.0.1 for tests: Debian's dovecot with a throwaway configuration.

    with imap_server() as server:                  # one user, server.username / server.password
        server.append(b"From: ...")                # IMAP APPEND into INBOX
        server.settings_yaml(security="starttls")  # the `bounces.imap` block that reaches it

It listens on free loopback ports, IMAP (with STARTTLS) and IMAPS, with a certificate made for
127.0.0.1 whose file is `server.ca_file`; configuration and mail live in a temporary folder that
dovecot's unprivileged processes can reach (pytest's own folders are private to the user). The test
is skipped with a message where dovecot is missing (`.ci/run` installs Debian's dovecot-imapd).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import imaplib
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"
USERNAME = "bounces"
PASSWORD = "imap-test-password"
_START_SECONDS = 15.0


@dataclass(frozen=True)
class ImapServer:
    port: int
    tls_port: int
    ca_file: Path
    maildir: Path               # the user's Maildir, as dovecot keeps it
    username: str = USERNAME
    password: str = PASSWORD

    def client(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4(HOST, self.port, timeout=10)
        client.login(self.username, self.password)
        return client

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        """Deliver each message into `folder` with IMAP APPEND."""
        client = self.client()
        try:
            for message in messages:
                status, data = client.append(folder, "", imaplib.Time2Internaldate(time.time()), message)
                assert status == "OK", data
        finally:
            client.logout()

    def count(self, folder: str) -> int:
        client = self.client()
        try:
            status, data = client.status(folder, "(MESSAGES)")
            assert status == "OK", data
            return int(data[0].split(b"MESSAGES ")[1].rstrip(b")"))
        finally:
            client.logout()

    def settings_yaml(self, *, security: str = "starttls", processed: str = "move", indent: str = "  ") -> str:
        """The `bounces.imap` block (under `bounces:`) for this server; the password is in IMAP_TEST_PASSWORD."""
        port = self.tls_port if security == "tls" else self.port
        lines = [f"host: {HOST}", f"port: {port}", f"security: {security}", f"username: {self.username}",
                 "password_env: IMAP_TEST_PASSWORD", f"ca_file: {self.ca_file}", f"processed: {processed}",
                 "timeout_seconds: 10"]
        return f"{indent}imap:\n" + "".join(f"{indent}  {line}\n" for line in lines)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


def _users() -> tuple[str, str, pwd.struct_passwd]:
    """Who dovecot runs as (internal processes, login processes, the mail's owner): as root, the
    package's own unprivileged users and `nobody` (dovecot refuses mail owned by root); otherwise the
    current user for all three."""
    me = pwd.getpwuid(os.getuid())
    if os.getuid() != 0:
        return me.pw_name, me.pw_name, me
    try:
        return pwd.getpwnam("dovecot").pw_name, pwd.getpwnam("dovenull").pw_name, pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("dovecot's users (dovecot, dovenull) are missing: install dovecot-imapd")


@contextlib.contextmanager
def imap_server() -> Iterator[ImapServer]:
    """Run dovecot for one test; stop it and remove its folder on leaving."""
    binary = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
    if binary is None:
        pytest.skip("dovecot is not installed (Debian's dovecot-imapd; .ci/run installs it)")
    with tempfile.TemporaryDirectory(prefix="dovecot-") as folder:
        yield from _run(binary, Path(folder))


def _run(binary: str, root: Path) -> Iterator[ImapServer]:
    (root / "run").mkdir(parents=True)
    (root / "state").mkdir()
    home = root / "home"
    home.mkdir()
    cert_file, key_file = _certificate(root)
    (root / "passwd").write_text(f"{USERNAME}:{{PLAIN}}{PASSWORD}\n")
    internal_user, login_user, mail_owner = _users()
    uid, gid = mail_owner.pw_uid, mail_owner.pw_gid
    os.chown(home, uid, gid)
    port, tls_port = _free_port(), _free_port()
    (root / "dovecot.conf").write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = {HOST}
default_internal_user = {internal_user}
default_login_user = {login_user}
first_valid_uid = {uid}
first_valid_gid = {gid}
ssl = yes
ssl_cert = <{cert_file}
ssl_key = <{key_file}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{home}/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {tls_port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""")
    # dovecot's login processes run as the unprivileged user and must reach its sockets and the certificate
    root.chmod(0o755)
    process = subprocess.Popen([binary, "-F", "-c", str(root / "dovecot.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        server = ImapServer(port, tls_port, cert_file, home / USERNAME / "Maildir")
        _wait_until_ready(server, process, root)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def _wait_until_ready(server: ImapServer, process: subprocess.Popen[bytes], root: Path) -> None:
    """Wait (bounded) until a login works; fail with dovecot's log when it exits or never does."""
    deadline = time.monotonic() + _START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            server.client().logout()
            return
        except (OSError, imaplib.IMAP4.error):
            time.sleep(0.05)        # polling a condition (the port answering), bounded by the deadline
    log = (root / "dovecot.log").read_text(errors="replace")[-2000:] if (root / "dovecot.log").exists() else ""
    error = process.stderr.read().decode(errors="replace")[-1000:] if process.poll() is not None and \
        process.stderr else ""
    raise RuntimeError(f"dovecot did not start: {error} {log}")
