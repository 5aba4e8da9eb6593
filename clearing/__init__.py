"""Points clearing platform: the core (ledger), web layer, app wiring and partner SDK."""
