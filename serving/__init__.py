"""The HTTP API: reads Redis only, never the processor's state."""
