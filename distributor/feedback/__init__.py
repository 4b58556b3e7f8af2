"""Bounces and complaints read back from the bounce mailbox: parsed into reports, recorded in the ledger."""
