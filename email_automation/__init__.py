"""email-automation: personalized outreach email in small, safe daily batches.

The library API the CLI is built on; import from here in scripts and tests.
"""

from __future__ import annotations

from importlib import import_module

from ._version import __version__

# name -> module; loaded on first use so `import email_automation` stays cheap for cron.
_EXPORTS = {
    "Settings": "config", "load_settings": "config",
    "init_db": "database", "open_db": "database", "connect": "database",
    "import_csv": "import_csv", "ImportReport": "import_csv",
    "run_daily": "run_daily", "RunReport": "run_daily",
    "make_transport": "transports",
    "retry_failed": "admin", "skip_recipient": "admin", "suppress": "admin", "unsuppress": "admin",
    "resolve_unknown": "admin", "set_campaign_status": "admin",
    "status_summary": "reports",
    "backup_database": "backup", "run_checks": "doctor", "send_summary": "summary_report",
    "setup_file_logging": "logs", "cron_line": "cron",
    "parse_notification": "events", "apply_events": "events", "poll_queue": "event_queue", "drain_queue": "event_queue",
    "DeliveryEvent": "events", "EventKind": "events", "EventReport": "events",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
