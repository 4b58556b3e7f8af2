"""distributor: render one Markdown newsletter issue for email, WeChat and plain text, and deliver it.

The stages, each handing a frozen value to the next: `issue.load_issue` (file → Issue),
`body.render_body` (Markdown → one clean HTML fragment), the channel renderers (→ one rendition
per channel, see `pipeline.render_issue`), then `publishing.publish`, which plans deliveries in
the ledger and hands them to the channels through `delivery` and `orchestrator`.
"""
