"""The bounce mailbox: an IMAP folder (imaplib) or a local Maildir, read one message at a time.

`unread` yields the messages not yet processed, oldest first, each fetched only if it is within
`bounces.max_message_bytes` (a larger one is yielded without its bytes, to be reported and left);
`done` moves a message to the processed folder (IMAP MOVE, else COPY, \\Deleted and EXPUNGE), or flags
it `$Distributor-Processed` where it is (`imap.processed: flag`). Every failure of the server or the
folder is one `StorageError` line naming the mailbox, never the password.
"""
from __future__ import annotations

import contextlib
import imaplib
import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from distributor.errors import SettingsError, StorageError
from distributor.settings import BouncesSettings, ImapSettings, secret_from_env

PROCESSED_KEYWORD = "$Distributor-Processed"
_MAILDIR_PROCESSED = "Processed"
_MAILDIR_SUBFOLDERS = ("cur", "new", "tmp")
_SIZE = re.compile(rb"RFC822\.SIZE (\d{1,12})")
_MAX_UIDS = 1_000_000


@dataclass(frozen=True)
class MailboxMessage:
    """One unread message: `raw` is None when it is larger than the limit and was not fetched."""

    key: str
    raw: bytes | None
    size: int


class BounceMailbox(Protocol):
    where: str

    def unread(self, limit: int) -> Iterator[MailboxMessage]: ...

    def done(self, key: str) -> None: ...


@contextlib.contextmanager
def open_mailbox(bounces: BouncesSettings) -> Iterator[BounceMailbox]:
    """Open the mailbox `bounces` names (IMAP first), and close it on leaving."""
    if bounces.imap is not None:
        imap = ImapMailbox(bounces.imap, bounces.max_message_bytes)
        try:
            yield imap
        finally:
            imap.close()
    elif bounces.maildir is not None:
        yield MaildirMailbox(Path(bounces.maildir).expanduser(), bounces.max_message_bytes)
    else:
        raise SettingsError("bounces: set bounces.imap or bounces.maildir (where bounce mail arrives)")


class MaildirMailbox:
    """A Maildir: unread messages are the files in its new/ and cur/, oldest first (a Maildir file name
    starts with its delivery time); a processed one is renamed into the Maildir++ folder `.Processed`
    (its cur/), which moves it atomically without copying it."""

    def __init__(self, path: Path, max_bytes: int):
        self.where = str(path)
        if not all((path / sub).is_dir() for sub in _MAILDIR_SUBFOLDERS):
            raise StorageError("bounces.maildir is not a Maildir (it needs cur, new and tmp folders)", path=str(path))
        self._path = path
        self._max_bytes = max_bytes
        self._processed: Path | None = None

    def unread(self, limit: int) -> Iterator[MailboxMessage]:
        with self._errors():
            keys = sorted((f"{sub}/{entry.name}" for sub in ("new", "cur") for entry in os.scandir(self._path / sub)
                           if entry.is_file() and not entry.name.startswith(".")), key=_delivery_order)[:limit]
        for key in keys:
            with self._errors(), open(self._path / key, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                raw = file.read(self._max_bytes + 1) if size <= self._max_bytes else None
            yield MailboxMessage(key, raw, size)

    def done(self, key: str) -> None:
        with self._errors():
            if self._processed is None:
                self._processed = self._path / f".{_MAILDIR_PROCESSED}"
                for sub in _MAILDIR_SUBFOLDERS:
                    (self._processed / sub).mkdir(parents=True, exist_ok=True)
                (self._processed / "maildirfolder").touch()
            name = key.partition("/")[2]
            os.rename(self._path / key, self._processed / "cur" / (name if ":2," in name else name + ":2,"))

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise StorageError(f"bounce mailbox: {exc.strerror}: {exc.filename}", path=self.where) from exc


def _delivery_order(key: str) -> tuple[str, str]:
    """A Maildir key ordered by its file name (delivery time first), whichever of new/ and cur/ holds it."""
    folder, _, name = key.partition("/")
    return name, folder


class ImapMailbox:
    """A folder on an IMAP server, logged in with the password from `imap.password_env`."""

    def __init__(self, settings: ImapSettings, max_bytes: int):
        self.settings = settings
        scheme = "imaps" if settings.security == "tls" else "imap"
        self.where = f"{scheme}://{settings.username}@{settings.host}:{settings.port}/{settings.folder}"
        self._max_bytes = max_bytes
        if settings.security == "plain" and not _is_loopback(settings.host):
            raise SettingsError(f"bounces.imap.security: plain is allowed only for a loopback host, "
                                f"not {settings.host!r}")
        password = secret_from_env(settings.password_env, "bounces.imap is set")
        self._client = self._connect()
        try:
            self._call("login", self._client.login, settings.username, password)
            self._call("select", self._client.select, _quoted(settings.folder))
            self._move = b"MOVE" in self._capabilities()
            if settings.processed == "move" and not self._exists(settings.processed_folder):
                self._call("create", self._client.create, _quoted(settings.processed_folder))
        except BaseException:
            self.close()
            raise

    def _connect(self) -> imaplib.IMAP4:
        settings = self.settings
        context = ssl.create_default_context(cafile=settings.ca_file) if settings.security != "plain" else None
        try:
            if settings.security == "tls":
                return imaplib.IMAP4_SSL(settings.host, settings.port, ssl_context=context,
                                         timeout=settings.timeout_seconds)
            client = imaplib.IMAP4(settings.host, settings.port, timeout=settings.timeout_seconds)
            if settings.security == "starttls":
                client.starttls(ssl_context=context)
            return client
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
            raise StorageError(f"bounce mailbox {self.where}: cannot connect: {exc}") from exc

    def unread(self, limit: int) -> Iterator[MailboxMessage]:
        criteria = f"UNKEYWORD {PROCESSED_KEYWORD}" if self.settings.processed == "flag" else "ALL"
        data = self._call("search", self._client.uid, "SEARCH", criteria)
        uids = [uid for uid in (data[0] or b"").split() if uid.isdigit()][:min(limit, _MAX_UIDS)]
        for uid in uids:
            size = self._size(uid)
            raw = self._fetch(uid) if size <= self._max_bytes else None
            yield MailboxMessage(uid.decode("ascii"), raw, size)

    def done(self, key: str) -> None:
        if self.settings.processed == "flag":
            self._call("store", self._client.uid, "STORE", key, "+FLAGS", f"({PROCESSED_KEYWORD})")
            return
        folder = _quoted(self.settings.processed_folder)
        if self._move:
            self._call("move", self._client.uid, "MOVE", key, folder)
            return
        self._call("copy", self._client.uid, "COPY", key, folder)
        self._call("store", self._client.uid, "STORE", key, "+FLAGS", "(\\Deleted)")
        self._call("expunge", self._client.expunge)

    def close(self) -> None:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self._client.logout()

    def _capabilities(self) -> set[bytes]:
        data = self._call("capability", self._client.capability)
        return set((data[0] or b"").upper().split())

    def _exists(self, folder: str) -> bool:
        data = self._call("list", self._client.list, '""', _quoted(folder))
        return any(isinstance(item, bytes) for item in data)

    def _size(self, uid: bytes) -> int:
        data = self._call("fetch", self._client.uid, "FETCH", uid, "(RFC822.SIZE)")
        found = _SIZE.search(data[0] if isinstance(data[0], bytes) else b"")
        if found is None:
            raise StorageError(f"bounce mailbox {self.where}: no size for message {uid.decode()}")
        return int(found.group(1))

    def _fetch(self, uid: bytes) -> bytes:
        data = self._call("fetch", self._client.uid, "FETCH", uid, "(BODY.PEEK[])")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        raise StorageError(f"bounce mailbox {self.where}: message {uid.decode()} came back empty")

    def _call(self, what: str, command: Callable[..., tuple[str, list[Any]]], *args: Any) -> list[Any]:
        """Run one IMAP command; return the data of its OK answer. Any other answer, a lost connection or a
        timeout is the mailbox's failure."""
        try:
            status, data = command(*args)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise StorageError(f"bounce mailbox {self.where}: {what} failed: {exc}") from exc
        if status != "OK":
            said = b" ".join(item for item in data if isinstance(item, bytes)).decode("utf-8", "replace")[:200]
            raise StorageError(f"bounce mailbox {self.where}: {what} refused: {said}")
        return data


def _quoted(folder: str) -> str:
    """An IMAP folder name as a quoted string (settings allow no quote or backslash in it)."""
    return f'"{folder}"'


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
