"""`python -m hud` runs the command line."""

from .cli import main

main()
