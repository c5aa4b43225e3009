"""IKE transforms, Diffie-Hellman groups and key derivation, all on the `cryptography` package."""
