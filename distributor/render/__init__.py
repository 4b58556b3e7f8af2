"""From an issue file to its renditions: source, Liquid, Markdown, sanitising, templates."""
