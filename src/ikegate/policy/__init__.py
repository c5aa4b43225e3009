"""The configuration model and its translation to protocol parameters."""
