"""meerkat-image without building an image: where the source comes from, what the cache key
follows, the one manifest on both ports (run through MicroPython's own manifest reader), the
ESP32 command line, and how a run on a frozen image is put together."""

from __future__ import annotations

import importlib.util
import os
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meerkat_tools import image, mpy, paths
from meerkat_tools.sim import runner

# ---------------------------------------------------------------------- the source


def test_missing_source_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv(image.SOURCE_ENV, raising=False)
    with pytest.raises(image.SourceMissing) as err:
        image.find_source(tmp_path / "nowhere")
    text = str(err.value)
    assert "git clone --branch v1.28.0 --depth 1 https://github.com/micropython/micropython" in text
    assert "submodule update --init --depth 1 lib/mbedtls lib/micropython-lib" in text
    assert str(tmp_path / "nowhere") in text


def test_source_from_the_environment_and_tree_check(tmp_path, monkeypatch):
    not_a_tree = tmp_path / "empty"
    not_a_tree.mkdir()
    monkeypatch.setenv(image.SOURCE_ENV, str(not_a_tree))
    with pytest.raises(image.SourceMissing, match="not a MicroPython source tree"):
        image.find_source()
    tree = tmp_path / "mp"
    (tree / "py").mkdir(parents=True)
    (tree / "ports" / "unix").mkdir(parents=True)
    monkeypatch.setenv(image.SOURCE_ENV, str(tree))
    assert image.find_source() == tree.resolve()
    assert image.find_source(str(tree)) == tree.resolve()  # --source wins over the environment too


def test_tree_fingerprint_follows_its_files(tmp_path):
    tree = tmp_path / "mp"
    (tree / "py").mkdir(parents=True)
    (tree / "py" / "a.c").write_text("int a;\n")
    before = image.source_fingerprint(tree)
    (tree / "build-standard").mkdir()  # build output does not count
    (tree / "build-standard" / "x.o").write_text("obj")
    assert image.source_fingerprint(tree) == before
    (tree / "py" / "a.c").write_text("int a, b;\n")
    assert image.source_fingerprint(tree) != before


# ---------------------------------------------------------------------- the cache key


def _firmware_copy(tmp_path: Path) -> Path:
    fw = tmp_path / "firmware"
    shutil.copytree(paths.FIRMWARE_PACKAGE, fw / "meerkat_rt", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(paths.FIRMWARE / "manifest.py", fw / "manifest.py")
    return fw


def test_firmware_digest_follows_the_whole_package_tree(tmp_path):
    fw = _firmware_copy(tmp_path)
    d0 = image.firmware_digest(fw)
    (fw / "meerkat_rt" / "__pycache__").mkdir(exist_ok=True)
    (fw / "meerkat_rt" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert image.firmware_digest(fw) == d0  # CPython's caches are not firmware
    sub = fw / "meerkat_rt" / "subpkg_for_test"
    sub.mkdir()
    (sub / "__init__.py").write_text("X = 1\n")
    d1 = image.firmware_digest(fw)
    assert d1 != d0  # a new subpackage is frozen content
    (sub / "__init__.py").write_text("X = 2\n")
    assert image.firmware_digest(fw) != d1
    (fw / "manifest.py").write_text((fw / "manifest.py").read_text() + "\n# changed\n")
    assert image.firmware_digest(fw) not in (d0, d1)


def test_cache_key_differs_per_image(tmp_path):
    src = tmp_path / "mp"
    (src / "py").mkdir(parents=True)
    keys = {n: image.cache_key(n, src) for n in image.RECIPES}
    assert len(set(keys.values())) == len(keys)


def test_make_command_of_each_image():
    tree, build, cross = Path("/t"), Path("/b/x"), Path("/b/mpy-cross/mpy-cross")
    f32 = image.unix_make_command("frozen32", tree, build, cross, 2)
    assert f32[:3] == ["make", "-C", "/t/ports/unix"]
    for arg in ("VARIANT=standard", "MICROPY_PY_BTREE=0", "MICROPY_PY_FFI=0", "CROSS_COMPILE=i686-linux-gnu-",
                "MPY_CROSS_FLAGS=-march=x86", f"FROZEN_MANIFEST={paths.FIRMWARE / 'manifest.py'}",
                "BUILD=/b/x", f"MICROPY_MPYCROSS={cross}"):
        assert arg in f32, arg
    f64 = image.unix_make_command("frozen64", tree, build, cross, 2)
    assert "MPY_CROSS_FLAGS=-march=x64" in f64 and not any(a.startswith("CROSS_COMPILE=") for a in f64)
    files32 = image.unix_make_command("files32", tree, build, cross, 2)
    assert not any(a.startswith("FROZEN_MANIFEST=") for a in files32)  # the port's own modules only


# ---------------------------------------------------------------------- the manifest, both ports


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> Path:
    try:
        src = image.find_source()
    except image.SourceMissing as exc:
        pytest.skip(str(exc))
    if src.is_dir():
        return src
    root = image.CACHE / image.source_root_id(src)
    return image.prepare_tree(src, root, image.QUIET, "test")


def _freeze_list(tree: Path, port_dir: Path, manifest: Path) -> list[str]:
    """The files MicroPython's manifest reader (tools/manifestfile.py of the tree) freezes for
    `manifest` when building the port at port_dir."""
    spec = importlib.util.spec_from_file_location("manifestfile_under_test", tree / "tools" / "manifestfile.py")
    assert spec is not None and spec.loader is not None
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    variables = {"MPY_DIR": str(tree), "PORT_DIR": str(port_dir), "BOARD_DIR": "", "MPY_LIB_DIR": str(tree / "lib" / "micropython-lib")}
    m = mf.ManifestFile(mf.MODE_FREEZE, variables)
    m.execute(str(manifest))
    return sorted(r.target_path for r in m.files())


def _package_files() -> list[str]:
    return sorted(str(p.relative_to(paths.FIRMWARE)) for p in mpy.firmware_sources())


def test_manifest_on_the_unix_port(source_tree):
    frozen = _freeze_list(source_tree, source_tree / "ports" / "unix", paths.FIRMWARE / "manifest.py")
    assert set(_package_files()) <= set(frozen)  # the whole package tree
    assert "asyncio/core.py" in frozen and "ssl.py" in frozen  # what the stock unix binary freezes


def test_manifest_on_the_esp32_port(source_tree, tmp_path):
    # The source tarball holds no ports/esp32: a stand-in with the one file the manifest looks
    # for, boards/manifest.py, freezing a marker module.
    port = tmp_path / "esp32"
    (port / "boards").mkdir(parents=True)
    (port / "boards" / "esp32_marker.py").write_text("X = 1\n")
    (port / "boards" / "manifest.py").write_text('module("esp32_marker.py")\n')
    frozen = _freeze_list(source_tree, port, paths.FIRMWARE / "manifest.py")
    assert "esp32_marker.py" in frozen
    assert set(_package_files()) <= set(frozen)
    assert "asyncio/core.py" not in frozen  # the unix variant's manifest was not taken as well


def test_manifest_does_not_hide_an_error_in_the_ports_manifest(source_tree, tmp_path):
    port = tmp_path / "esp32"
    (port / "boards").mkdir(parents=True)
    (port / "boards" / "manifest.py").write_text('include("$(PORT_DIR)/missing/manifest.py")\n')
    with pytest.raises(Exception, match="missing/manifest.py"):
        _freeze_list(source_tree, port, paths.FIRMWARE / "manifest.py")


def test_manifest_freezes_a_new_subpackage(source_tree, tmp_path):
    fw = _firmware_copy(tmp_path)
    (fw / "meerkat_rt" / "subpkg_for_test").mkdir()
    (fw / "meerkat_rt" / "subpkg_for_test" / "__init__.py").write_text("X = 1\n")
    frozen = _freeze_list(source_tree, source_tree / "ports" / "unix", fw / "manifest.py")
    assert "meerkat_rt/subpkg_for_test/__init__.py" in frozen


# ---------------------------------------------------------------------- the ESP32 image


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meerkat_tools.image", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("board", image.ESP32_BOARDS)
def test_esp32_dry_run_prints_the_build_consistent_with_the_manifest(board):
    proc = _cli("--esp32", board, "--dry-run", "--json", "--source", "/opt/micropython")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    manifest = Path(out["manifest"])
    assert manifest == paths.FIRMWARE / "manifest.py" and manifest.is_file()
    assert "$(PORT_DIR)/boards/manifest.py" in manifest.read_text()  # what ports/esp32 has
    cmds = out["commands"]
    assert cmds[0] == "make -C /opt/micropython/mpy-cross -j" + cmds[0].rsplit("-j", 1)[1]
    assert cmds[-1] == f"make -C /opt/micropython/ports/esp32 BOARD={board} FROZEN_MANIFEST={manifest}"
    assert out["firmware"] == f"/opt/micropython/ports/esp32/build-{board}/firmware.bin"
    assert out["esp_idf"].startswith("v5.")


def test_esp32_dry_run_text_and_variant():
    proc = _cli("--esp32", "ESP32_GENERIC_S3", "--variant", "SPIRAM_OCT", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if not l.startswith("#")]
    assert lines[-1] == (
        f"make -C micropython/ports/esp32 BOARD=ESP32_GENERIC_S3 BOARD_VARIANT=SPIRAM_OCT FROZEN_MANIFEST={paths.FIRMWARE / 'manifest.py'}"
    )
    assert "build-ESP32_GENERIC_S3-SPIRAM_OCT/firmware.bin" in proc.stdout


def test_esp32_build_without_esp_idf_fails_clearly(tmp_path):
    tree = tmp_path / "micropython"
    (tree / "ports" / "esp32").mkdir(parents=True)
    proc = _cli("--esp32", "ESP32_GENERIC", "--source", str(tree))
    if shutil.which("idf.py"):
        pytest.skip("ESP-IDF is installed here: this checks the message without it")
    assert proc.returncode == 2 and "ESP-IDF not found" in proc.stderr


def test_bad_arguments():
    assert _cli("frozen16").returncode == 2
    assert _cli("--esp32", "ESP32_GENERIC", "frozen32").returncode == 2
    assert _cli("--variant", "SPIRAM").returncode == 2


# ---------------------------------------------------------------------- runs on an image


def test_module_path_puts_the_frozen_package_first():
    frozen = mpy.Image("f", "/bin/true", "x86", 32, frozen=True)
    files = mpy.Image("g", "/bin/true", "x86", 32, frozen=False)
    assert mpy.module_path(["/a", "/b"], frozen) == [".frozen", "/a", "/b"]
    assert mpy.module_path(["/a", ".frozen"], files) == ["/a", ".frozen"]
    assert mpy.module_path(["/a"]) == ["/a", ".frozen"]  # the stock binary, as before


def _mpy_arch(path: Path) -> int:
    head = path.read_bytes()[:4]
    assert head[0] == ord("M") and head[1] == 6, head
    return head[2] >> 2  # the native architecture in the feature byte: 0 none (bytecode), 1 x86, 2 x64


def test_simulator_build_for_a_frozen_32_bit_image():
    # mpy-cross is the installed one here; nothing is run on the (absent) binary.
    img = mpy.Image("frozen32-test", "/nonexistent/micropython", "x86", 32, frozen=True)
    build = runner.firmware_build(img)
    assert not (build / "meerkat_rt").exists()  # would shadow the frozen package
    for name in ("machine.mpy", "network.mpy", "simworld.mpy", "device.mpy"):
        assert _mpy_arch(build / name) in (0, 1), name  # bytecode, or native code for x86


def test_firmware_files_are_compiled_for_the_image():
    files32 = runner.firmware_build(mpy.Image("files32-test", "/nonexistent/micropython", "x86", 32, frozen=False))
    native32 = {_mpy_arch(p) for p in (files32 / "meerkat_rt").rglob("*.mpy")} - {0}
    native64 = {_mpy_arch(p) for p in (runner.firmware_build() / "meerkat_rt").rglob("*.mpy")} - {0}
    assert native32 == {1} and native64 == {2}  # the viper module: x86 code here, x64 for the stock binary
    sources = {p.relative_to(paths.FIRMWARE).with_suffix(".mpy") for p in mpy.firmware_sources()}
    assert sources == {p.relative_to(files32) for p in (files32 / "meerkat_rt").rglob("*.mpy")}


def test_cpython_runtime_takes_no_image():
    with pytest.raises(ValueError, match="CPython"):
        runner.SimDevice({}, runtime="cpython", image="frozen32")


def test_the_readme_shows_what_the_esp32_dry_run_prints():
    readme = (paths.REPO / "README.md").read_text()
    marker = "--esp32 ESP32_GENERIC --source /path/to/micropython --dry-run   # prints:\n"
    assert marker in readme
    documented = readme.split(marker, 1)[1].split("```", 1)[0].strip().splitlines()
    proc = _cli("--esp32", "ESP32_GENERIC", "--source", "/path/to/micropython", "--dry-run", "--jobs", "2")
    printed = [l for l in proc.stdout.splitlines() if not l.startswith("#")]
    assert [l.replace("$PWD", str(paths.REPO)) for l in documented] == printed


def test_missing_32_bit_toolchain_names_the_packages(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name.startswith("i686-") else real(name))
    with pytest.raises(image.ToolchainMissing, match="apt-get install gcc-i686-linux-gnu libc6-i386"):
        image.check_toolchain("frozen32")
    if real("gcc") and real("make"):
        image.check_toolchain("frozen64")  # 64-bit needs no cross compiler


def test_meerkat_sim_without_a_source_says_how_to_get_it(tmp_path):
    env = dict(os.environ, **{image.SOURCE_ENV: str(tmp_path / "no-micropython")})
    proc = subprocess.run(
        [sys.executable, "-m", "meerkat_tools.sim", "--image", "frozen32", "--heap", "110K"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )
    assert proc.returncode != 0
    assert "--image frozen32" in proc.stderr and "git clone --branch v1.28.0" in proc.stderr
