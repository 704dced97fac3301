"""`python -m nas.export`: see `nas.cli.export` (the files it writes: `nas.model.files`)."""

if __name__ == "__main__":
    from nas.cli.common import run
    from nas.cli.export import main

    run(main)
