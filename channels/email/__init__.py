"""The email channel: an HTML document with every style inlined, plus its text part.

The mail itself — headers (List-Unsubscribe and List-Unsubscribe-Post among them), MIME parts, the
wire bytes — is built in `channels/mail/message.py`, which the text channel shares.
"""
