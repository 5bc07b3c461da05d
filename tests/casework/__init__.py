"""Tests of app/casework."""
