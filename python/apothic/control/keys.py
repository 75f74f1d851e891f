"""Every aiohttp AppKey of the control plane, in one place."""

from __future__ import annotations

from aiohttp import web

from apothic.control.auth import Auth
from apothic.control.config import ServerConfig
from apothic.control.dicts import DictService
from apothic.control.hub import Hub
from apothic.control.providers.local import LocalProvider
from apothic.control.queues import QueueService
from apothic.control.sandboxes import SandboxManager
from apothic.control.scheduler import Scheduler
from apothic.control.store import Store
from apothic.control.web import WebService

CONFIG = web.AppKey("config", ServerConfig)
STORE = web.AppKey("store", Store)
HUB = web.AppKey("hub", Hub)
SCHEDULER = web.AppKey("scheduler", Scheduler)
AUTH = web.AppKey("auth", Auth)
LOCAL_PROVIDER = web.AppKey("local_provider", LocalProvider)
QUEUES = web.AppKey("queues", QueueService)
DICTS = web.AppKey("dicts", DictService)
WEB = web.AppKey("web", WebService)
SANDBOXES = web.AppKey("sandboxes", SandboxManager)
