"""Frontend side: sweep spec, matrix, launchers, campaign store, collect, CLI."""
__version__ = "0.1.0"
