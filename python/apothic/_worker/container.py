"""A container: one child process that loads one function and runs its calls one at a time.

Started by the agent as `python -m apothic._worker.container` before it is needed, it imports
only the standard library and cloudpickle until told what to load, so taking a warm spare and
loading a function costs milliseconds. It talks to the agent over an inherited socket, with the
frames of `apothic._wire` behind a u32 length. Python-level prints go over the same socket in
order with the result; output written to fds 1 and 2 directly reaches the agent's pipes.
"""

from __future__ import annotations

import importlib
import inspect
import os
import signal
import socket
import sys
import traceback
from typing import Any

import cloudpickle

from apothic import _wire

_TERM = {signal.SIGTERM}


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM: the agent is stopping this container gracefully."""


_stopping = False


def _on_sigterm(signum: int, frame: Any) -> None:
    global _stopping
    if not _stopping:  # a second SIGTERM must not interrupt the @exit hooks
        _stopping = True
        raise _Stop()


def _class_instance(target: Any, info: dict[str, Any]) -> Any:
    """An @app.cls class built with its parameters, @enter run: calls go to its methods."""
    from apothic.cls import Dispatcher, construct, run_hooks

    obj = construct(getattr(target, "_user_cls", target), info["params"])
    run_hooks(obj, "enter")
    return Dispatcher(obj, info["methods"])


def _run_exit_hooks(dispatcher: Any) -> None:
    from apothic.cls import run_hooks

    try:
        run_hooks(dispatcher.obj, "exit")
    except BaseException as e:
        sys.stderr.write("".join(traceback.format_exception(e)))


class _Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        frame = _wire.pack(header, payload)
        # A SIGTERM handled mid-frame would leave the agent a torn frame: it waits until this is out.
        signal.pthread_sigmask(signal.SIG_BLOCK, _TERM)
        try:
            self.sock.sendall(len(frame).to_bytes(4, "big") + frame)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _TERM)

    def recv(self) -> tuple[dict[str, Any], bytes] | None:
        while True:
            if len(self.buffer) >= 4:
                size = int.from_bytes(self.buffer[:4], "big")
                if len(self.buffer) >= 4 + size:
                    frame, self.buffer = self.buffer[4 : 4 + size], self.buffer[4 + size :]
                    return _wire.unpack(frame)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buffer += chunk


class _Output:
    """sys.stdout/sys.stderr inside a container: each write becomes a log frame."""

    def __init__(self, channel: _Channel, stream: str) -> None:
        self.channel = channel
        self.stream = stream
        self.job: str | None = None

    def write(self, text: str) -> int:
        if text:
            self.channel.send({"t": "output", "stream": self.stream, "job": self.job}, text.encode())
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


def _load(header: dict[str, Any]) -> Any:
    sys.path.insert(0, header["bundle_dir"])
    module = importlib.import_module(header["module"])
    target: Any = module
    for part in header["qualname"].split("."):
        target = getattr(target, part)
    raw = getattr(target, "get_raw_f", None)
    return raw() if callable(raw) else target


def _outcome_error(exc: BaseException) -> tuple[bytes, dict[str, str]]:
    tb = "".join(traceback.format_exception(exc))
    message = f"{type(exc).__name__}: {exc}"
    try:
        payload = cloudpickle.dumps(("err", exc, tb))
        cloudpickle.loads(payload)  # an exception that pickles but cannot unpickle is no use
    except Exception:
        payload = cloudpickle.dumps(("err", None, tb))
    return payload, {"code": "remote.error", "message": message}


def _die_with_agent() -> None:
    """A container whose agent is gone must not keep running user code nobody will collect."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the agent died before the line above took effect
            os._exit(1)


def main() -> None:
    _die_with_agent()
    channel = _Channel(socket.socket(fileno=int(os.environ["APOTHIC_CONTAINER_FD"])))
    stdout, stderr = _Output(channel, "stdout"), _Output(channel, "stderr")
    loaded: dict[str, Any] = {}
    try:
        _serve(channel, stdout, stderr, loaded)
    except _Stop:
        pass
    if _stopping and loaded.get("instance") is not None:
        _run_exit_hooks(loaded["instance"])


def _serve(channel: _Channel, stdout: _Output, stderr: _Output, loaded: dict[str, Any]) -> None:
    fn: Any = None
    while True:
        message = channel.recv()
        if message is None:
            return
        header, payload = message
        if header["t"] == "load":
            try:
                sys.stdout, sys.stderr = stdout, stderr
                fn = _load(header)
                web = getattr(fn, "__apothic_web__", None)
                if web is not None:  # a web function: its runtime owns the channel from here on
                    from apothic._worker import web_runtime

                    return web_runtime.serve(channel.sock, channel.buffer, fn, web, [stdout, stderr])
                if header.get("cls"):
                    fn = loaded["instance"] = _class_instance(fn, header["cls"])
                signal.signal(signal.SIGTERM, _on_sigterm)  # from here a graceful stop runs @exit
                channel.send({"t": "ready"})
            except BaseException as e:
                channel.send({"t": "load_failed", "error": "".join(traceback.format_exception(e))})
                return
        elif header["t"] == "run":
            stdout.job = stderr.job = header["job"]
            try:
                args, kwargs = cloudpickle.loads(payload)
                value = fn(*args, **kwargs)
                if inspect.iscoroutine(value):
                    import asyncio

                    value = asyncio.run(value)
                try:
                    result, error, ok = cloudpickle.dumps(("ok", value)), None, True
                except Exception as e:
                    result, error = _outcome_error(
                        TypeError(f"the function's return value could not be pickled: {e}"))
                    ok = False
            except BaseException as e:
                result, error = _outcome_error(e)
                ok = False
            channel.send({"t": "result", "job": header["job"], "ok": ok, "error": error}, result)
            stdout.job = stderr.job = None
            if _stopping:
                return


if __name__ == "__main__":
    main()
