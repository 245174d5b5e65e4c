"""Errors a user can cause and fix.

The CLI prints any :class:`FlexGuardError` as ``error: <message>`` and exits with code 2,
so messages must name the bad value and say what was expected. Programming errors are
left to surface as ordinary exceptions.
"""

from __future__ import annotations


class FlexGuardError(Exception):
    """Base class of every error meant to be shown to a user."""


class DataError(FlexGuardError):
    """Input data is missing, malformed or inconsistent (files, columns, labels, texts)."""


class ConfigError(FlexGuardError):
    """A policy, threshold, option or configuration value is invalid."""


class UnknownBackendError(FlexGuardError, KeyError):
    """A moderator backend name is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BackendError(FlexGuardError):
    """A moderator backend failed at run time (server unreachable, missing extra, ...)."""
