"""Command-line client of the image pipeline's HTTP API (the emulator or a deployed URL)."""

__version__ = "0.1.0"  # the project's version (pyproject.toml); `image-pipeline --version`
