"""The ledger: the SQLite file or PostgreSQL database that remembers what was sent, to whom, and what
must not be sent."""
