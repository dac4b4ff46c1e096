"""`python -m keepdesk` runs the command line."""

from keepdesk.cli import main

# Guarded: the mail parser's worker processes import the main module again (parsers.py).
if __name__ == "__main__":
    main()
