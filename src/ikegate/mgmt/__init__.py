"""Management access around the Device: console, control socket, SSH, metrics, syslog."""
