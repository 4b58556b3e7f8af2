"""The ledger: the SQLite file that remembers what was sent, to whom, and what must not be sent."""
