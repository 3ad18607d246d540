"""The node database's revisions, oldest first (``node_0001``, ``node_0002``...)."""
