"""Background work: the one list of tasks, their supervision, and database leases."""
