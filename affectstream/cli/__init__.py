"""Every `affectstream` command: one module per command or command group; shared flags in `args`."""
