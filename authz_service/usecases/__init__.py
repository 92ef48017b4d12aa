"""Use cases: Check and the admin calls, over the core's Store and Hasher interfaces."""

from .admin import Admin, EntryChange, NewEntry
from .check import Checker

__all__ = ["Admin", "Checker", "EntryChange", "NewEntry"]
