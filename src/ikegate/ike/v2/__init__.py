"""The IKEv2 (RFC 7296) IKE SA and Child SA state machines, sans-I/O."""
