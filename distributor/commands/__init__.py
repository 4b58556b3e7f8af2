"""The command layer: one module per `distributor` command; the only code that prints."""
