"""Test support: real services (PostgreSQL), the fake clock, named users."""
