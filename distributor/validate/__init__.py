"""Allow-list checks of what comes from outside: addresses, header text, URLs, bounded files and YAML."""
