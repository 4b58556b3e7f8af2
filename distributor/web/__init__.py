"""The web side: the unsubscribe application, its WSGI server, and the live preview page and server."""
