"""Who else is on a ticket right now: agents viewing it and agents typing a reply (issue 4 item
5), kept in memory and, on PostgreSQL, shared between instances with LISTEN/NOTIFY (issue 5
item 6)."""
