"""``python -m tollway`` runs the command-line interface."""

from tollway.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
