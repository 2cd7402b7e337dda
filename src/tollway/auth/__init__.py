"""Stage 1, *who is calling?*: API keys, their storage, and the authenticator."""
