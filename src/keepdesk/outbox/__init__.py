"""Outbound mail rows: enqueued with the change that causes them, then claimed and delivered."""
