"""The hub database's revisions, oldest first (``hub_0001``, ``hub_0002``...)."""
