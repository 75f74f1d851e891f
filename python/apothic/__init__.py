"""Apothic: a self-hostable serverless runtime for Python that speaks Modal's API."""

from apothic import exception
from apothic.app import App, LocalEntrypoint
from apothic.dict import Dict, DictEntry, DictLease, DictLock, Election
from apothic.function import Function, FunctionCall
from apothic.image import Image
from apothic.job import Job, JobEvent
from apothic.queue import Claim, Queue
from apothic.retries import Retries

__all__ = [
    "App",
    "Claim",
    "Dict",
    "DictEntry",
    "DictLease",
    "DictLock",
    "Election",
    "Function",
    "FunctionCall",
    "Image",
    "Job",
    "JobEvent",
    "LocalEntrypoint",
    "Queue",
    "Retries",
    "exception",
]
__version__ = "0.1.0"
