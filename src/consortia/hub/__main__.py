"""``python -m consortia.hub``: serve a hub (see :func:`consortia.hub.server.main`)."""

from consortia.hub.server import main

if __name__ == "__main__":
    main()
