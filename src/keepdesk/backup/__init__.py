"""Backups: a consistent, portable, optionally encrypted archive; verify; restore anywhere."""
