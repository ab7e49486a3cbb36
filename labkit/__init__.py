"""labkit: the shared package of the semantic image synthesis course."""
__version__ = "0.1.0"
