"""Transports hand a built message to a mail service; `make_transport` picks the one to use."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Transport


SMTP_HOST_MISSING = ("TRANSPORT=smtp needs SMTP_HOST, the SMTP server to send through (e.g. SMTP_HOST=smtp.gmail.com);"
                     " it is not set")


def make_transport(settings: Any, *, dry_run: bool | None = None) -> Transport:
    """The transport for this run: DryRun, or SES/SMTP per settings.transport.

    The only place where `settings.dry_run` decides whether messages leave (`status` and
    `doctor` only mention it); a `dry_run` argument (a CLI flag) overrides it. The SES and SMTP
    transports are imported only when one is asked for.

    Raises:
        ConfigError: a real send is asked for without SENDER_EMAIL, with TRANSPORT=smtp and no
            SMTP_HOST, or with an unknown TRANSPORT.
    """
    if settings.dry_run if dry_run is None else dry_run:
        from .dry_run import DryRunTransport

        return DryRunTransport(settings)
    if not settings.sender_email:
        raise ConfigError("SENDER_EMAIL is not set: set it to the verified address you send from")
    if settings.transport == "ses":
        from .ses import SesTransport

        return SesTransport(settings)
    if settings.transport == "smtp":
        if not settings.smtp_host.strip():  # a silent localhost would hand real mail to whatever listens there
            raise ConfigError(SMTP_HOST_MISSING)
        from .smtp import SmtpTransport

        return SmtpTransport(settings)
    raise ConfigError(f"invalid setting TRANSPORT={settings.transport}: expected ses or smtp")


__all__ = ["Transport", "make_transport"]
