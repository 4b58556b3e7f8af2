"""distributor: render one Markdown newsletter issue for email, WeChat and plain text, and deliver it.

The stages, each handing a frozen value to the next: `render.issue.load_issue` (file → Issue),
`render.body.render_body` (Markdown → one clean HTML fragment), each channel's renderer (→ one
rendition per channel, see `render.renditions.render_issue`), then `delivery.publish.publish`, which
plans deliveries in the ledger and runs each channel through the core's row run or step run.
ARCHITECTURE.md draws the layers.
"""
