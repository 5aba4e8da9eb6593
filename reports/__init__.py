"""Reports: figures that tie to the ledger (liability, breakage, flows), their exports, and the
console, the platform's pages for people (finance teams, operators, risk analysts).

Reports read every domain and write nothing; each is computed set-based in the database so that a
year of a large program is never read into memory at once. The console is the only writer here:
its users, sessions and audit trail (`reports.console`).
"""
