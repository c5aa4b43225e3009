"""The IKE protocol core: sans-I/O codecs, cryptography and state machines (no sockets, no clocks)."""
