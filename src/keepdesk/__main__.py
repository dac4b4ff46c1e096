"""`python -m keepdesk` runs the command line."""

from keepdesk.cli import main

main()
