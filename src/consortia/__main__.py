"""``python -m consortia``: the same as the ``consortia`` command."""

from consortia.cli import main

if __name__ == "__main__":
    main()
