"""The one exception type for data problems a user can fix."""

from __future__ import annotations


class DataError(ValueError):
    """A data problem the user must fix (missing files, empty classes, too many unreadable images, ...).

    The message always says what is wrong, where, and what to do about it.
    """
