"""One adapter per channel: how an issue is rendered for it and how a rendition is delivered.

Adapters make one attempt and classify failures into `distributor.errors`; retrying, rate
limits and the ledger are the core's business.
"""
