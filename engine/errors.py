"""One error type for bad input: it names the file (or dataset), the field or row, and the rule."""

from __future__ import annotations


class EngineError(Exception):
    """Raised when an input breaks a rule; the run stops and nothing partial is published."""

    def __init__(self, where: str, field: str, rule: str):
        self.where, self.field, self.rule = str(where), str(field), rule
        super().__init__(f"{self.where}: {self.field}: {rule}")


class PublishConflict(EngineError):
    """A re-emit whose bytes differ from what is already published."""
