"""Sending by workers: drains in the ledger, claimed in batches by `distributor worker` on any machine."""
