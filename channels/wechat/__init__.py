"""The WeChat Official Account channel: the article, its images, the API client and the publish steps."""
