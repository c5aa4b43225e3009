"""Renderers: the exact VRP text of configuration and, later, runtime displays."""
