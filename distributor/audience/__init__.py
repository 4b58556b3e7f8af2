"""Who an issue goes to: subscriber files read row by row, and the signed tokens of unsubscribe links."""
