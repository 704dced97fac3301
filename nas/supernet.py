"""`python -m nas.supernet train`: see `nas.cli.supernet` (the training is `nas.training.supernet`)."""

if __name__ == "__main__":
    from nas.cli.supernet import main

    main()
