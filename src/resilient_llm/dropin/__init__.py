"""What the drop-in client classes share: wrapping the official SDKs through their seams."""
