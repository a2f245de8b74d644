"""Where estimates leave the process: the websocket server (and, later, the demo window)."""
