"""The thin asyncio layer: UDP endpoints for IKE (500/4500) and the single timer."""
