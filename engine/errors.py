"""One error type for bad input: it names the file (or dataset), the field or row, and the rule."""

from __future__ import annotations

import errno as _errno
import os


class EngineError(Exception):
    """Raised when an input breaks a rule; the run stops and nothing partial is published."""

    def __init__(self, where: str, field: str, rule: str):
        # One line whatever the parts hold (a library's multi-line message, a newline in a file name).
        self.where, self.field, self.rule = _one_line(where), _one_line(field), " ".join(str(rule).split())
        super().__init__(f"{self.where}: {self.field}: {self.rule}")

    def __reduce__(self):
        # Raised in a worker process and re-raised by the driver (engine/executors.py): pickled by its parts.
        return type(self), (self.where, self.field, self.rule)


def _one_line(value) -> str:
    return str(value).replace("\r", "\\r").replace("\n", "\\n")


class PublishConflict(EngineError):
    """A re-emit whose bytes differ from what is already published."""


# What the operating system's refusals mean for a run, in the words of the rule they break.
_OS_RULES = {
    _errno.ENOSPC: "no space left on the device; nothing partial was published, free space and rerun",
    _errno.EDQUOT: "disk quota exceeded; nothing partial was published, free space and rerun",
    _errno.EACCES: "permission denied",
    _errno.EPERM: "operation not permitted",
    _errno.EROFS: "read-only file system",
    _errno.ENOENT: "no such file or folder",
    _errno.ENOTDIR: "a path component is a file, not a folder",
    _errno.EISDIR: "is a folder where a file is expected",
    _errno.ELOOP: "too many levels of symbolic links",
    _errno.ENAMETOOLONG: "file name too long",
    _errno.EMFILE: "too many open files",
}


def from_os_error(exc: OSError, where: str | os.PathLike | None = None) -> EngineError:
    """An OSError (disk full, permission denied, read-only root, ...) as a one-line EngineError."""
    code = getattr(exc, "errno", None)
    name = _errno.errorcode.get(code, "OSError") if code is not None else type(exc).__name__
    target = getattr(exc, "filename", None) or where or "(file system)"
    rule = _OS_RULES.get(code) or (exc.strerror or str(exc) or type(exc).__name__)
    return EngineError(target, name, rule)
