"""Size limits shared by the wire format, the hub and the node (no imports: read by the CLI)."""

DEFAULT_MAX_BYTES = 256 * 2**20
"""The largest frame (arrays and their header) that is accepted by default."""
