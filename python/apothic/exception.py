"""One exception hierarchy with stable dotted codes.

The same code travels from the Rust core, through HTTP (`{"error": {"code", "message"}}`), to the
class raised here and to the CLI's exit code (`exit_code_for`).
"""

from __future__ import annotations


class Error(Exception):
    """Base of every Apothic error. `code` is stable; the message is for people."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidError(Error):
    code = "invalid_argument"
    http_status = 400


class MalformedRequestError(InvalidError):
    code = "request.malformed"


class NotFoundError(Error):
    code = "not_found"
    http_status = 404


class AuthError(Error):
    code = "auth.invalid_key"
    http_status = 401


class ConnectionError(Error):
    code = "server.unreachable"
    http_status = 503


class SerializationError(Error):
    code = "serialization.failed"
    http_status = 400


class ExecutionError(Error):
    """The function could not be run (its module failed to import, its container died...)."""

    code = "execution.failed"
    http_status = 500


class RemoteError(Error):
    """A remote exception that could not be re-created at the caller as its own type."""

    code = "remote.error"
    http_status = 500


class TimeoutError(Error):
    code = "timeout"
    http_status = 408


class FunctionTimeoutError(TimeoutError):
    code = "function.timeout"


class OutputExpiredError(TimeoutError):
    code = "job.pending"


class InputCancellation(Error):
    code = "function.cancelled"
    http_status = 409


class ConflictError(Error):
    code = "conflict"
    http_status = 409


class LeaseLostError(ConflictError):
    code = "queue.lease_lost"


class QueueEmptyError(Error):
    """No item became visible before the timeout. The SDK raises Python's `queue.Empty`."""

    code = "queue.empty"
    http_status = 408


class ShutdownError(Error):
    code = "shutdown"
    http_status = 503


class NoAppError(InvalidError):
    code = "app.not_found_in_file"


class SandboxTerminatedError(Error):
    """The sandbox has ended (terminated, timed out, its command exited or its worker was lost)."""

    code = "sandbox.terminated"
    http_status = 409


class SandboxTimeoutError(TimeoutError):
    code = "sandbox.timeout"


class ExecTimeoutError(TimeoutError):
    code = "sandbox.exec_timeout"


class SandboxFilesystemError(Error):
    code = "sandbox.filesystem_error"
    http_status = 400


class SandboxFilesystemNotFoundError(SandboxFilesystemError, NotFoundError):
    code = "sandbox.file_not_found"
    http_status = 404


class SandboxPathEscapeError(SandboxFilesystemError):
    """A path that would leave the sandbox's root (`..`, or a symlink pointing out)."""

    code = "sandbox.path_escape"
    http_status = 403


class ProviderError(Error):
    """A capacity provider (Vast.ai, Fly) could not be reached or refused a request."""

    code = "provider.unavailable"
    http_status = 503


class WebUpstreamError(Error):
    """A web function's container failed to load, died, or broke off a response."""

    code = "web.upstream_failed"
    http_status = 502


class WebTimeoutError(TimeoutError):
    """A web request got no response within the function's timeout."""

    code = "web.timeout"
    http_status = 504


class InstanceConflictError(ConflictError):
    """A named class instance exists with other parameters than the ones asked for."""

    code = "cls.instance_conflict"


class InstanceStoppedError(ConflictError):
    """A call to a named class instance after `stop()`."""

    code = "cls.instance_stopped"


_CLASSES: list[type[Error]] = [
    Error,
    InvalidError,
    MalformedRequestError,
    NotFoundError,
    AuthError,
    ConnectionError,
    SerializationError,
    ExecutionError,
    RemoteError,
    TimeoutError,
    FunctionTimeoutError,
    OutputExpiredError,
    InputCancellation,
    ConflictError,
    LeaseLostError,
    QueueEmptyError,
    ShutdownError,
    NoAppError,
    SandboxTerminatedError,
    SandboxTimeoutError,
    ExecTimeoutError,
    SandboxFilesystemError,
    SandboxFilesystemNotFoundError,
    SandboxPathEscapeError,
    ProviderError,
    InstanceConflictError,
    InstanceStoppedError,
    WebUpstreamError,
    WebTimeoutError,
]

# Codes that have no class of their own map onto the nearest class.
_EXTRA_CODES: dict[str, type[Error]] = {
    "auth.missing_key": AuthError,
    "app.not_found": NotFoundError,
    "function.not_found": NotFoundError,
    "job.not_found": NotFoundError,
    "blob.not_found": NotFoundError,
    "queue.not_found": NotFoundError,
    "queue.compacted": NotFoundError,
    "dict.not_found": NotFoundError,
    "dict.key_not_found": NotFoundError,
    "lock.timeout": TimeoutError,
    "election.timeout": TimeoutError,
    "dict.cas_conflict": ConflictError,
    "dict.lease_not_found": NotFoundError,
    "dict.fence_stale": ConflictError,
    "dict.compacted": NotFoundError,
    "lock.not_held": ConflictError,
    "election.not_leader": ConflictError,
    "placement.no_match": InvalidError,
    "placement.invalid_filter": InvalidError,
    "sandbox.not_found": NotFoundError,
    "sandbox.process_not_found": NotFoundError,
    "sandbox.session_not_found": NotFoundError,
    "sandbox.name_taken": ConflictError,
    "sandbox.no_worker": TimeoutError,
    "sandbox.file_too_large": InvalidError,
    "provider.rejected": ProviderError,
    "cls.invalid_params": InvalidError,
    "cls.not_found": NotFoundError,
    "cls.method_not_found": NotFoundError,
    "session.protocol": MalformedRequestError,
    "session.closed": ConnectionError,
    "session.dead": ConnectionError,
    "session.stream_not_found": NotFoundError,
    "session.stream_closed": InvalidError,
    "session.stream_reset": ConnectionError,
    "session.buffer_full": ConflictError,
    "session.stream_limit": ConflictError,
    "web.not_found": NotFoundError,
    "web.websocket_rejected": InvalidError,
}

CODE_TO_CLASS: dict[str, type[Error]] = {cls.code: cls for cls in _CLASSES} | _EXTRA_CODES

# CLI exit codes: 1 is reserved for "the user's own code failed"; 2 is typer's usage error.
_EXIT_CODES: dict[str, int] = {
    "internal": 10,
    "invalid_argument": 11,
    "request.malformed": 12,
    "not_found": 13,
    "app.not_found": 13,
    "function.not_found": 13,
    "job.not_found": 13,
    "blob.not_found": 13,
    "auth.invalid_key": 14,
    "auth.missing_key": 14,
    "server.unreachable": 15,
    "serialization.failed": 16,
    "execution.failed": 17,
    "remote.error": 1,
    "timeout": 18,
    "function.timeout": 18,
    "job.pending": 19,
    "function.cancelled": 20,
    "conflict": 21,
    "queue.lease_lost": 21,
    "queue.empty": 22,
    "queue.not_found": 13,
    "queue.compacted": 13,
    "shutdown": 23,
    "app.not_found_in_file": 24,
    "dict.not_found": 13,
    "dict.key_not_found": 13,
    "lock.timeout": 18,
    "election.timeout": 18,
    "dict.cas_conflict": 21,
    "dict.lease_not_found": 13,
    "dict.fence_stale": 21,
    "dict.compacted": 13,
    "lock.not_held": 21,
    "election.not_leader": 21,
    "placement.no_match": 25,
    "placement.invalid_filter": 11,
    "sandbox.not_found": 13,
    "sandbox.process_not_found": 13,
    "sandbox.session_not_found": 13,
    "sandbox.file_not_found": 13,
    "sandbox.name_taken": 21,
    "sandbox.timeout": 18,
    "sandbox.exec_timeout": 18,
    "sandbox.no_worker": 18,
    "sandbox.file_too_large": 11,
    "sandbox.terminated": 40,
    "sandbox.path_escape": 41,
    "sandbox.filesystem_error": 42,
    "provider.unavailable": 26,
    "provider.rejected": 26,
    "cls.instance_conflict": 21,
    "cls.instance_stopped": 21,
    "cls.invalid_params": 11,
    "cls.not_found": 13,
    "cls.method_not_found": 13,
    "session.protocol": 12,
    "session.closed": 15,
    "session.dead": 15,
    "session.stream_not_found": 13,
    "session.stream_closed": 11,
    "session.stream_reset": 15,
    "session.buffer_full": 21,
    "session.stream_limit": 21,
    "web.not_found": 13,
    "web.upstream_failed": 17,
    "web.timeout": 18,
    "web.websocket_rejected": 11,
}


def error_for(code: str, message: str) -> Error:
    """The exception for a wire error: its class from the code, the code kept as sent."""
    cls = CODE_TO_CLASS.get(code, Error)
    return cls(message, code=code)


def exit_code_for(code: str) -> int:
    return _EXIT_CODES.get(code, 10)
