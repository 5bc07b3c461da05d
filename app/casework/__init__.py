"""Casework: the people who work enquiries once they are accepted (docs/casework.md)."""
