"""Casework: what people do with enquiries once they are accepted (the triage desk, the
dead-letter desk, stuck work, partners' staff moving their part, caller history)."""
