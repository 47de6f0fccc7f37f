"""failforge: find where a language model fails and forge training data from it."""

__version__ = "0.1.0"
