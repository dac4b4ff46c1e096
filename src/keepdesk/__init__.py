"""keepdesk: a self-hosted customer-service helpdesk."""

__version__ = "0.1.0"
