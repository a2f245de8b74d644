"""What every layer shares: clock, typed messages, ring buffers, audio helpers, labels, config, errors."""
