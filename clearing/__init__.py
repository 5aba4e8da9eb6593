"""Ledger core, database, app wiring and command line of the points clearing platform."""
