from __future__ import annotations

import io
import zipfile

from apothic import _bundle
from tests.e2e.apps import basic


def test_bundle_is_deterministic_and_excludes_the_runtime() -> None:
    digest, data = _bundle.build(basic)
    again, _ = _bundle.build(basic)
    assert digest == again
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "tests/e2e/apps/basic.py" in names
    assert not any(n.startswith(("python/apothic", "apothic/")) for n in names)
