"""`python -m nas.latency`: see `nas.cli.latency` (the tables: `nas.hardware.latency`)."""

if __name__ == "__main__":
    from nas.cli.common import run
    from nas.cli.latency import main

    run(main)
