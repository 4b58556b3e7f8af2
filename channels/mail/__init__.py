"""What the mail channels share: each recipient's message as wire bytes, the SMTP pool and the dry-run sink."""
