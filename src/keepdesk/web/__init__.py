"""Shared web plumbing: the page layout, static files, security headers, common API types."""
