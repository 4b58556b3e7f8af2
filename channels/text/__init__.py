"""The plain-text channel: wrapped by display columns (CJK counts two), links as numbered references."""
