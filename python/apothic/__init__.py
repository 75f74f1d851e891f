"""Apothic: a self-hostable serverless runtime for Python that speaks Modal's API."""

from apothic import exception
from apothic.app import App, LocalEntrypoint
from apothic.cls import Cls, Obj, enter, exit, method, parameter
from apothic.dict import Dict, DictEntry, DictLease, DictLock, Election
from apothic.function import Function, FunctionCall
from apothic.image import Image
from apothic.job import Job, JobEvent
from apothic.queue import Claim, Queue
from apothic.retries import Retries
from apothic.sandbox import ContainerProcess, FileInfo, Sandbox, SandboxSession
from apothic.service import (
    asgi_app,
    concurrent,
    endpoint,
    fastapi_endpoint,
    web_endpoint,
    web_server,
    wsgi_app,
)

__all__ = [
    "App",
    "Claim",
    "Cls",
    "ContainerProcess",
    "Dict",
    "DictEntry",
    "DictLease",
    "DictLock",
    "Election",
    "FileInfo",
    "Function",
    "FunctionCall",
    "Image",
    "Job",
    "JobEvent",
    "LocalEntrypoint",
    "Obj",
    "Queue",
    "Retries",
    "Sandbox",
    "SandboxSession",
    "asgi_app",
    "concurrent",
    "endpoint",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "method",
    "parameter",
    "web_endpoint",
    "web_server",
    "wsgi_app",
]
__version__ = "0.1.0"
