"""`python -m nas.train`: see `nas.cli.train` (the training itself is `nas.training.train`)."""

if __name__ == "__main__":
    from nas.cli.train import main

    main()
