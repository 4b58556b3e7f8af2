"""The relay's connection settings for the SMTP pool, read from `smtp` in the settings."""
from __future__ import annotations

import os
import ssl
import stat

from distributor.channels.mail.smtp import SmtpConfig
from distributor.errors import InputError
from distributor.settings import Settings, secret_from_env

_MAX_CA_FILE_BYTES = 1 << 20


def smtp_config(settings: Settings) -> SmtpConfig:
    """Return the relay's connection settings, with the password read from the environment."""
    smtp = settings.smtp
    password = secret_from_env(smtp.password_env, "smtp.username is set") if smtp.username else None
    try:
        return SmtpConfig(host=smtp.host, port=smtp.port, security=smtp.security, username=smtp.username,
                          password=password, timeout_seconds=smtp.timeout_seconds, pool_size=smtp.pool_size,
                          local_hostname=smtp.ehlo_name, cafile=_ca_file(smtp.ca_file))
    except ValueError as exc:
        raise InputError(f"smtp: {exc}") from exc


def _ca_file(path: str | None) -> str | None:
    """Return `smtp.ca_file` with `~` expanded, once it is known to be a file of PEM certificates."""
    if path is None:
        return None
    expanded = os.path.expanduser(path)
    try:
        if not stat.S_ISREG(os.stat(expanded).st_mode) or os.path.getsize(expanded) > _MAX_CA_FILE_BYTES:
            raise InputError(f"smtp.ca_file: {path} is not a regular file of at most 1 MB")
        ssl.create_default_context().load_verify_locations(cafile=expanded)
    except ssl.SSLError as exc:
        raise InputError(f"smtp.ca_file: {path} holds no PEM certificate: {exc.reason}") from exc
    except OSError as exc:
        raise InputError(f"smtp.ca_file: {path} cannot be read: {exc.strerror}") from exc
    return expanded
