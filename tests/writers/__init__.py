"""Test-side writers of third-party checkpoint formats (fixtures built from tiny random networks)."""
