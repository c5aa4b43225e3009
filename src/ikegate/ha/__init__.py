"""Hot-standby pair (issue 17): engine state export/import, the encrypted sync channel between the two
nodes, roles and keepalived supervision. See docs/ha.md."""
