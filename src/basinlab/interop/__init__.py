"""Formats of other projects, kept out of the core: nothing in basinlab's core imports this package."""
