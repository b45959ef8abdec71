"""meerkat-bench's import order over a package with subpackages: every module once, each after
the modules it imports at module level and after its own subpackage."""

from __future__ import annotations

from meerkat_tools import paths
from meerkat_tools.bench import imports


def test_relative_imports_resolve_inside_subpackages():
    assert imports.module_deps("from . import ws\nfrom .compat import x\n") == ["ws", "compat", "compat.x"]
    src = "from ..ring import FrameRing\nfrom . import protocol\nfrom .backend import Backend\n"
    assert imports.module_deps(src, "v2") == ["ring", "ring.FrameRing", "v2.protocol", "v2.backend", "v2.backend.Backend"]
    assert imports.module_deps("def f():\n    from . import late\n") == []  # lazy imports are not load-time deps


def test_load_order_with_a_subpackage(tmp_path, monkeypatch):
    pkg = tmp_path / "meerkat_rt"
    (pkg / "v2").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "compat.py").write_text("X = 1\n")
    (pkg / "app.py").write_text("from . import compat\nfrom .v2 import backend\n")
    (pkg / "v2" / "__init__.py").write_text("")
    (pkg / "v2" / "backend.py").write_text("from ..compat import X\nfrom . import protocol\n")
    (pkg / "v2" / "protocol.py").write_text("Y = 2\n")
    monkeypatch.setattr(paths, "FIRMWARE_PACKAGE", pkg)
    order = imports.load_order()
    assert sorted(order) == ["app", "compat", "v2", "v2.backend", "v2.protocol"]
    pos = {n: i for i, n in enumerate(order)}
    assert pos["compat"] < pos["app"] and pos["v2.backend"] < pos["app"]
    assert pos["v2"] < pos["v2.protocol"] < pos["v2.backend"]
