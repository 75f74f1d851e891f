"""`apothic run FILE[::ENTRYPOINT]` and `apothic deploy FILE`."""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from apothic.app import App, LocalEntrypoint
from apothic.cli._output import console, handles_errors
from apothic.exception import Error, InvalidError, NoAppError
from apothic.function import Function


def import_file(path_str: str) -> Any:
    path = Path(path_str).resolve()
    if not path.is_file():
        raise InvalidError(f"no such file: {path_str}")
    sys.path.insert(0, str(path.parent))
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidError(f"cannot import {path_str} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def find_app(module: Any, path: str) -> App:
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if not apps:
        raise NoAppError(f"{path} defines no apothic.App (expected e.g. `app = apothic.App(\"name\")`)")
    if len(apps) > 1:
        named = [a for a in apps if vars(module).get("app") is a]
        if not named:
            raise NoAppError(f"{path} defines {len(apps)} apps; name the one to run `app`")
        return named[0]
    return apps[0]


def _convert(value: str, annotation: Any) -> Any:
    for kind in (int, float):
        if annotation in (kind, kind.__name__):
            return kind(value)
    if annotation in (bool, "bool"):
        return value.lower() in ("1", "true", "yes")
    return value


def _entry_kwargs(fn: Any, extra: list[str]) -> dict[str, Any]:
    """`--name value` pairs after the target, converted by the entrypoint's annotations."""
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {}
    it = iter(extra)
    for token in it:
        if not token.startswith("--"):
            raise InvalidError(f"unexpected argument {token!r}; pass entrypoint arguments as --name value")
        key = token[2:].replace("-", "_")
        if key not in params:
            raise InvalidError(f"the entrypoint has no parameter {key!r}")
        value = next(it, None)
        if value is None:
            raise InvalidError(f"--{key} needs a value")
        kwargs[key] = _convert(value, params[key].annotation)
    return kwargs


@handles_errors
def run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="FILE or FILE::ENTRYPOINT")],
) -> None:
    """Run a local entrypoint (or a single function) of an app, ephemerally."""
    path, _, entry_name = target.partition("::")
    module = import_file(path)
    app = find_app(module, path)
    if entry_name:
        entry: Any = app.registered_entrypoints.get(entry_name) or app.registered_functions.get(entry_name)
        if entry is None:
            raise InvalidError(f"{path} has no entrypoint or function named {entry_name!r}")
    elif len(app.registered_entrypoints) == 1:
        entry = next(iter(app.registered_entrypoints.values()))
    elif not app.registered_entrypoints and len(app.registered_functions) == 1:
        entry = next(iter(app.registered_functions.values()))
    else:
        names = sorted([*app.registered_entrypoints, *app.registered_functions])
        raise InvalidError(f"{path} has several candidates ({', '.join(names)}); pick one with {path}::NAME")
    with app.run():
        try:
            if isinstance(entry, LocalEntrypoint):
                entry(**_entry_kwargs(entry.raw_f, ctx.args))
            elif isinstance(entry, Function):
                result = entry.remote(**_entry_kwargs(entry.get_raw_f(), ctx.args))
                if result is not None:
                    console.print(result)
        except Error:
            raise
        except Exception:
            traceback.print_exc()
            raise typer.Exit(1) from None


@handles_errors
def deploy(
    path: Annotated[str, typer.Argument(help="The app's file.")],
    name: Annotated[str | None, typer.Option(help="Deployment name (default: the App's name).")] = None,
) -> None:
    """Deploy an app persistently; its functions answer Function.from_name from any process."""
    module = import_file(path)
    app = find_app(module, path)
    app.deploy(name=name)
    console.print(f"deployed [bold]{app.name}[/bold] as {app.app_id} with functions: "
                  f"{', '.join(app.registered_functions)}")
    for fname, fn in app.registered_functions.items():
        if (fn.options or {}).get("web"):
            console.print(f"  {fname}: {fn.get_web_url()}", highlight=False)
