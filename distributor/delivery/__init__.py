"""Deliver a rendered issue: plan the ledger rows, run each channel, retry, rate-limit, report."""
