"""`python -m nas.search`: see `nas.cli.search`."""

from nas.cli.search import main

main()
