"""Command-line client of the image pipeline's HTTP API (the emulator or a deployed URL)."""
