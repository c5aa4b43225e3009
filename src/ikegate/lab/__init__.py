"""The embedded demo lab: gateways on loopback with no root needed."""
