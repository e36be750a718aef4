"""CLI commands for operations on a server (filled in by the operations work)."""
