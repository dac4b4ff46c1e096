"""Tickets, their messages, attachments, tags and history, and the rules that move them."""
