"""CLI commands for the dashboard (filled in by the dashboard work)."""
