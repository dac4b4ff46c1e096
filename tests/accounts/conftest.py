"""Account tests use the suite-wide fixtures of tests/conftest.py (fast argon2id included)."""
