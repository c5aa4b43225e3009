"""Management access: local console and control socket (SSH comes later)."""
