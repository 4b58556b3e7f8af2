"""The email channel: an HTML document with every style inlined, plus its text part."""
