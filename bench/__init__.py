"""`make bench`: a realistic data set built in bulk, scenarios against a real `keepdesk serve`,
and the machine's own ceiling measured in the same run (docs/benchmarks.md)."""
