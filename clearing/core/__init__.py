"""The ledger core: accounts, balances, journal, holds, lots, idempotency, money; imports no domain."""
