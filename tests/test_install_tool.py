"""tools/install.py: the lock matches pyproject.toml, wheels that write a same file are never split between two
pip processes, the free pip process gets its share of the checked wheels, and the parallel install puts real
wheels into a real venv."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import py_compile
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("install_tool", ROOT / "tools" / "install.py")
assert spec is not None and spec.loader is not None
install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install)


def test_lock_was_made_from_this_pyproject():
    lock = json.loads(install.LOCK.read_text())
    assert lock["key"] == install.lock_key(".[dev]"), "pyproject.toml changed: run `make lock` and commit the lock"
    assert lock["key"] != install.lock_key(".[track]")
    assert {"torch", "tensorflow", "openvino", "onnxruntime", "ofa"} <= {w["name"] for w in lock["wheels"]}
    assert all(w["url"].endswith(".whl") and len(w["sha256"]) == 64 for w in lock["wheels"])


def make_wheel(folder: Path, name: str, files: dict[str, str]) -> Path:
    """A minimal valid wheel of `name` 1.0 holding `files` (path -> text)."""
    dist = f"{name}-1.0.dist-info"
    entries = {**files, f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
               f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in entries.items():
            zf.writestr(path, text)
        zf.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


def locked_entries(wheels: list[Path]) -> list[dict]:
    """Lock entries (name, version 1.0, file URL, sha256) of wheels made by make_wheel."""
    return [{"name": w.name.split("-")[0], "version": "1.0", "url": w.as_uri(),
             "sha256": hashlib.sha256(w.read_bytes()).hexdigest()} for w in wheels]


def fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path


@pytest.fixture
def made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder for a test's wheels; the install tool's caches kept inside tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "wheels"
    folder.mkdir()
    return folder


def test_only_wheels_writing_a_same_file_stay_in_one_group(tmp_path):
    a = make_wheel(tmp_path, "nsa", {"ns/a/__init__.py": "A = 1\n"})
    b = make_wheel(tmp_path, "nsb", {"ns/b/__init__.py": "B = 2\n"})  # the same folder only: apart
    c = make_wheel(tmp_path, "solo", {"solo.py": "C = 3\n", "solo-1.0.data/scripts/solo-cli": "#!python\n"})
    d = make_wheel(tmp_path, "clash", {"clash/__init__.py": "", "clash-1.0.data/purelib/ns/a/__init__.py": "X\n"})
    e = make_wheel(tmp_path, "cli", {"cli.py": "", "cli-1.0.dist-info/entry_points.txt":
                                     "[console_scripts]\nsolo-cli = cli:main\n"})
    groups = sorted(sorted(p.name for p in g) for g in install.groups_of([a, b, c, d, e]))
    assert groups == sorted([sorted([c.name, e.name]), sorted([d.name, a.name]), [b.name]])
    assert install.written_files(c) == {"solo.py", "scripts:solo-cli"}
    assert install.written_files(e) == {"cli.py", "scripts:solo-cli"}


def _hand_outs(tmp_path, names: list[str], groups: list[list[str]] | None = None):
    """CheckedWheels over small files named `names`, in that order, for two pip processes."""
    files = {}
    for name in names:
        files[name] = tmp_path / f"{name}.whl"
        files[name].write_bytes(name.encode())
    sha = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files.values()}
    g = None if groups is None else [[files[n] for n in group] for group in groups]
    return install.CheckedWheels(list(files.values()), sha, None, g, jobs=2)


def test_the_free_pip_process_takes_its_share_of_the_checked_wheels(tmp_path, monkeypatch):
    """Two idle pip processes split what is checked evenly by cost, not the first one everything."""
    costs = {"a": 40, "b": 30, "c": 20, "d": 10}
    monkeypatch.setattr(install, "install_cost", lambda p: costs[p.stem])
    checked = _hand_outs(tmp_path, list(costs))
    first = checked.take(0)
    second = checked.take(1)
    assert sorted(p.stem for p in first + second) == ["a", "b", "c", "d"]
    assert sum(costs[p.stem] for p in first) == 50 == sum(costs[p.stem] for p in second)
    assert checked.take(0) == [] and checked.take(1) == []
    checked.close()


def test_a_group_held_by_one_pip_process_waits_for_it(tmp_path, monkeypatch):
    """Wheels writing a same file never go to two pip processes at once: the one free while the group is held
    gets the others, and the group's rest goes to whoever takes after the holder is done."""
    costs = {"x1": 50, "x2": 50, "y": 10}
    monkeypatch.setattr(install, "install_cost", lambda p: costs[p.stem])
    checked = _hand_outs(tmp_path, list(costs), groups=[["x1", "x2"], ["y"]])
    first = checked.take(0)
    assert [p.stem for p in first] == ["x1"]  # half of 110 is nearest to 50
    assert [p.stem for p in checked.take(1)] == ["y"]  # x2 is held by process 0
    assert [p.stem for p in checked.take(0)] == ["x2"]
    assert checked.take(1) == [] and checked.take(0) == []
    checked.close()


@pytest.mark.slow
def test_parallel_install_into_a_real_venv(tmp_path, made):
    venv = fresh_venv(tmp_path / "venv")
    python = str(venv / "bin" / "python")
    wheels = [make_wheel(made, "nsa", {"ns/a/__init__.py": "A = 1\n"}),
              make_wheel(made, "nsb", {"ns/b/__init__.py": "B = 2\n"}),
              make_wheel(made, "solo", {"solo.py": "C = 3\n"})]
    locked = locked_entries(wheels)
    install.install_wheels(python, locked, jobs=2)
    out = subprocess.run([python, "-c", "import ns.a, ns.b, solo; print(ns.a.A + ns.b.B + solo.C)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "6"
    freeze = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True).stdout.split()
    assert {"nsa==1.0", "nsb==1.0", "solo==1.0"} <= set(freeze)  # recorded by version, not by a temp path
    locked[0]["sha256"] = "0" * 64
    with pytest.raises(install.Fallback, match="sha256"):
        install.install_wheels(python, locked, jobs=2)


def test_downloads_are_kept_in_the_cache_and_reused(tmp_path):
    """A wheel served over HTTP (a local server: no network) is downloaded once; the next fetch links the
    cached file, and a cached file damaged since is downloaded again."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    wheel = make_wheel(served, "solo", {"solo.py": "C = 3\n"})
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        locked = [{"name": "solo", "version": "1.0", "sha256": sha,
                   "url": f"http://127.0.0.1:{server.server_address[1]}/{wheel.name}"}]
        cache = tmp_path / "cache"
        for run, expected_hits in ((1, 1), (2, 1)):
            folder = tmp_path / f"fetch{run}"
            folder.mkdir()
            [got] = install.fetch(locked, folder, cache)
            assert got.read_bytes() == wheel.read_bytes() and len(hits) == expected_hits
        cached = cache / sha[:2] / sha / wheel.name
        assert got.resolve() == cached.resolve()
        cached.write_bytes(b"damaged")
        (tmp_path / "fetch3").mkdir()
        [got] = install.fetch(locked, tmp_path / "fetch3", cache)
        assert got.read_bytes() == wheel.read_bytes() and len(hits) == 2
        assert not list(cached.parent.glob(".*.part"))
    finally:
        server.shutdown()


@pytest.mark.slow
def test_a_second_venv_links_the_files_an_earlier_install_kept(tmp_path, made, capsys):
    """The first install keeps hard links to what pip wrote; the next venv gets the same files linked (a
    script copied with its interpreter line pointing at the new venv), importable and known to pip; a kept
    file edited in place since spoils the cache, and that install goes through pip again."""
    wheels = [make_wheel(made, "nsa", {"ns/a/__init__.py": "A = 1\n"}),
              make_wheel(made, "solo", {"solo.py": "C = 3\n",
                                        "solo-1.0.data/scripts/solo-cli": "#!python\nimport sys\nprint(sys.prefix)\n"})]
    locked = locked_entries(wheels)

    def venv_with_install(name):
        venv = fresh_venv(tmp_path / name)
        python = str(venv / "bin" / "python")
        install.install_wheels(python, locked, jobs=2)
        out = subprocess.run([python, "-c", "import ns.a, solo; print(ns.a.A + solo.C)"], capture_output=True,
                             text=True, check=True).stdout
        assert out.strip() == "4"
        script = venv / "bin" / "solo-cli"
        assert script.read_text().splitlines()[0] == f"#!{venv / 'bin' / 'python'}"
        ran = subprocess.run([python, str(script)], capture_output=True, text=True, check=True)
        assert Path(ran.stdout.strip()) == venv
        freeze = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True).stdout.split()
        assert {"nsa==1.0", "solo==1.0"} <= set(freeze)
        return venv, capsys.readouterr().out

    first, said = venv_with_install("first")
    assert "links" not in said
    second, said = venv_with_install("second")
    assert "as links to the files of an earlier install" in said
    module = Path("lib") / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages" / "solo.py"
    assert (first / module).stat().st_ino == (second / module).stat().st_ino
    assert not (first / "bin" / "solo-cli").samefile(second / "bin" / "solo-cli")
    with (second / module).open("a") as f:  # edited in place: the same file in the cache
        f.write("C = 4\n")
    third, said = venv_with_install("third")
    assert "changed since it was kept" in said
    assert (third / module).read_text() == "C = 3\n"
    kept = next((tmp_path / "cache" / "ofa-factory" / "site").iterdir()) / "tree" / module
    kept.unlink()  # a kept file removed since: dropped too, not tried (and failed) at every later install
    _, said = venv_with_install("fourth")
    assert "changed since it was kept" in said
    _, said = venv_with_install("fifth")
    assert "as links to the files of an earlier install" in said


def test_only_the_newest_kept_installs_stay(tmp_path):
    import os

    for i, name in enumerate(["oldest", "middle", "newest"]):
        (tmp_path / name).mkdir()
        manifest = tmp_path / name / install.SITE_MANIFEST
        manifest.write_text("{}")
        os.utime(manifest, ns=(10**18 + i, 10**18 + i))
    (tmp_path / ".partial.part").mkdir()  # another install still saving: not a kept install
    dropped = install.prune_sites(tmp_path, keep=2)
    assert [d.name for d in dropped] == ["oldest"]
    assert sorted(d.name for d in tmp_path.iterdir()) == [".partial.part", "middle", "newest"]


def test_checked_wheels_are_handed_over_while_others_are_still_being_read(tmp_path, monkeypatch):
    """A pip process gets the wheels checked so far (after a short patience), not only once every one is: a
    wheel still being read (a pipe nobody has written yet) does not hold back the others."""
    import os
    import threading

    monkeypatch.setattr(install.CheckedWheels, "PATIENCE", 0.2)
    monkeypatch.setattr(install, "install_cost", lambda p: 1)  # neither file is a zip
    ready, slow = tmp_path / "ready.whl", tmp_path / "slow.whl"
    ready.write_bytes(b"ready")
    os.mkfifo(slow)
    sha = {ready: hashlib.sha256(b"ready").hexdigest(), slow: hashlib.sha256(b"slow").hexdigest()}
    checked = install.CheckedWheels([slow, ready], sha, cache=None)
    got: list = []
    taker = threading.Thread(target=lambda: got.append(checked.take(0)), daemon=True)
    taker.start()
    taker.join(timeout=30)
    try:
        assert got == [[ready]]
    finally:
        with slow.open("wb") as f:  # unblocks the reader either way
            f.write(b"slow")
    assert checked.take(0) == [slow]
    checked.close()


def test_a_check_reads_the_whole_file_in_small_pieces(tmp_path, monkeypatch):
    """The sha256 covers every byte of a file several read chunks long, read at most a chunk at a time."""
    import io

    data = bytes(range(256)) * (14_000 + 7)  # ~3.6 MB: three whole chunks and a piece
    path = tmp_path / "big.whl"
    path.write_bytes(data)
    sizes = []
    real_read = io.FileIO.read

    class Recording(io.FileIO):
        def read(self, n=-1):
            sizes.append(n)
            return real_read(self, n)

    monkeypatch.setattr(install.Path, "open", lambda self, mode="r", buffering=-1: Recording(self, "rb"))
    assert install.sha256_of(path) == hashlib.sha256(data).hexdigest()
    assert max(sizes) == install.READ_CHUNK and len(sizes) == len(data) // install.READ_CHUNK + 2


def test_a_cached_wheel_that_fails_its_check_is_dropped_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    kept = cache / "ab" / "solo-1.0-py3-none-any.whl"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"damaged")
    link = tmp_path / "solo-1.0-py3-none-any.whl"
    link.symlink_to(kept)
    checked = install.CheckedWheels([link], {link: "0" * 64}, cache)
    with pytest.raises(install.Fallback, match="sha256"):
        checked.take(0)
    checked.close()
    assert not kept.exists()


@pytest.mark.slow
def test_only_the_recorded_imports_are_byte_compiled_and_kept(tmp_path, monkeypatch, made):
    """With an imports list recorded for these wheels, pip installs without byte-compiling and only the listed
    modules get a .pyc, each in its distribution's RECORD (so pip uninstalls it and the next venv links it);
    a list recorded for other wheels does not apply: everything is compiled, as pip does."""
    wheels = [make_wheel(made, "nsa", {"ns/a/__init__.py": "A = 1\n"}),
              make_wheel(made, "solo", {"solo.py": "C = 3\n", "unused.py": "D = 4\n"})]
    locked = locked_entries(wheels)
    imports = tmp_path / "install-imports.txt"
    monkeypatch.setattr(install, "IMPORTS", imports)
    tag = sys.implementation.cache_tag

    def venv_with_install(name: str) -> Path:
        venv = fresh_venv(tmp_path / name)
        install.install_wheels(str(venv / "bin" / "python"), locked, jobs=2)
        return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"

    imports.write_text(f"# wheels {install.wheels_key(locked)}\nsolo.py\nns/a/__init__.py\nabsent/module.py\n")
    site = venv_with_install("listed")
    assert (site / "__pycache__" / f"solo.{tag}.pyc").is_file()
    assert (site / "ns" / "a" / "__pycache__" / f"__init__.{tag}.pyc").is_file()
    assert not list(site.rglob("unused.*.pyc"))
    assert f"__pycache__/solo.{tag}.pyc,," in (site / "solo-1.0.dist-info" / "RECORD").read_text().splitlines()
    linked = venv_with_install("linked")  # from the files the first install kept
    assert (linked / "__pycache__" / f"solo.{tag}.pyc").is_file()
    subprocess.run([str(linked.parents[2] / "bin" / "python"), "-m", "pip", "uninstall", "--yes", "--quiet", "solo"],
                   check=True)
    assert not (linked / "__pycache__" / f"solo.{tag}.pyc").exists()

    imports.write_text("# wheels 0123\nsolo.py\n")  # recorded with other wheels
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    site = venv_with_install("other")
    assert (site / "__pycache__" / f"unused.{tag}.pyc").is_file()


def test_recorded_imports_cover_every_python_process_a_command_starts(tmp_path):
    """tools/record_imports.py notes the installed modules a command's processes read (a child of a child too,
    from source or from byte-code), by site-packages path; not the ones nothing imported."""
    spec = importlib.util.spec_from_file_location("record_imports", ROOT / "tools" / "record_imports.py")
    assert spec is not None and spec.loader is not None
    recorder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recorder)
    site = tmp_path / "site"
    (site / "pkg" / "__pycache__").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("")
    (site / "pkg" / "used.py").write_text("X = 1\n")
    (site / "pkg" / "unused.py").write_text("Y = 2\n")
    (site / "top.py").write_text("Z = 3\n")
    py_compile.compile(str(site / "pkg" / "used.py"))  # imported from its .pyc: the source is never opened
    (tmp_path / "child.py").write_text(f"import sys\nsys.path.insert(0, {str(site)!r})\nimport top\n")
    child = str(tmp_path / "child.py")
    (tmp_path / "parent.py").write_text(f"import subprocess, sys\nsys.path.insert(0, {str(site)!r})\nimport pkg.used\n"
                                        f"subprocess.run([sys.executable, {child!r}], check=True)\n")
    command = f"{sys.executable} {tmp_path / 'parent.py'}"
    assert recorder.record([command], site) == {"pkg/__init__.py", "pkg/used.py", "top.py"}
    pyc = site / "pkg" / "__pycache__" / "used.cpython-311.pyc"
    assert recorder.source_of(str(pyc)) == str(site / "pkg" / "used.py")


@pytest.mark.slow
def test_what_the_venv_came_with_is_uninstalled_before_any_pip_process_installs(tmp_path, monkeypatch, made):
    """A fresh venv's own setuptools, pinned by the lock in another version, is uninstalled before either pip
    process starts (it ran beside them: one replacing it while the other listed the distributions); the
    pinned version ends up installed, alone."""
    venv = fresh_venv(tmp_path / "venv")
    python = str(venv / "bin" / "python")
    wheels = [make_wheel(made, "setuptools", {"setuptools_stub.py": "S = 1\n"}),
              make_wheel(made, "solo", {"solo.py": "C = 3\n"})]
    locked = locked_entries(wheels)
    calls = []
    real_run_pip = install.run_pip

    def run_pip(python, args):
        if args[0] == "uninstall":
            import time

            time.sleep(1.0)  # a slow uninstall: the pip processes must still wait for it
        calls.append(args[0])
        return real_run_pip(python, args)

    monkeypatch.setattr(install, "run_pip", run_pip)
    install.install_wheels(python, locked, jobs=2)
    assert calls[0] == "uninstall" and calls.count("uninstall") == 1 and "install" in calls
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    assert sorted(p.name for p in site.glob("setuptools-*.dist-info")) == ["setuptools-1.0.dist-info"]
