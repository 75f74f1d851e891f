"""Ships the caller's module and the local modules it imports, as a zip named by its hash.

"Local" means a module whose file lies under the directory of the app's own file and not in
an installed location (site-packages, the interpreter's prefix). The zip is built
deterministically (sorted names, fixed timestamps), so unchanged code keeps its hash and is
uploaded and unpacked once.
"""

from __future__ import annotations

import hashlib
import io
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import ModuleType

_FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def _installed_roots() -> list[Path]:
    roots = {Path(p).resolve() for p in sysconfig.get_paths().values() if p}
    roots |= {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    return list(roots)


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def module_name_for(module: ModuleType) -> str:
    """The name a container imports: a script run as __main__ is imported by its file stem."""
    if module.__name__ == "__main__":
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            return spec.name
        return Path(module.__file__ or "main").stem
    return module.__name__


def build(app_module: ModuleType) -> tuple[str, bytes]:
    """(sha256 hex digest, zip bytes) of the app's module and its local imports."""
    main_file = Path(app_module.__file__ or "").resolve()
    root = main_file.parent
    installed = [r for r in _installed_roots() if not _is_under(root, r)]
    files: dict[str, Path] = {}
    name = module_name_for(app_module)
    files[name.replace(".", "/") + (".py" if main_file.name != "__init__.py" else "/__init__.py")] = main_file
    if "." in name:
        root = main_file.parents[name.count(".")]
    for module_name, module in list(sys.modules.items()):
        if module_name == "apothic" or module_name.startswith("apothic."):
            continue  # the runtime itself is installed on every worker
        path_str = getattr(module, "__file__", None)
        if not path_str or not path_str.endswith(".py"):
            continue
        path = Path(path_str).resolve()
        if not _is_under(path, root) or any(_is_under(path, r) for r in installed):
            continue
        files.setdefault(str(path.relative_to(root)), path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname in sorted(files):
            info = zipfile.ZipInfo(arcname, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[arcname].read_bytes())
    data = buffer.getvalue()
    return hashlib.sha256(data).hexdigest(), data
