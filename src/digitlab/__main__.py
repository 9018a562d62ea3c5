"""``python -m digitlab``: the same command as ``digitlab`` (see ``digitlab.cli.train``)."""

from digitlab.cli.train import main

if __name__ == "__main__":
    main()
