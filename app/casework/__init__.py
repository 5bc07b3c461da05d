"""Casework: people working enquiries once they are accepted (the triage desk, the dead-letter
desk, stuck work, partners' staff moving their parts, a caller's history)."""
