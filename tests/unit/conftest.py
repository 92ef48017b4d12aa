"""Fixtures shared by the unit tests."""

from admin_world import world, worlds

__all__ = ["world", "worlds"]
