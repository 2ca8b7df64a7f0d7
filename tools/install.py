"""Install the project and its dependencies into a venv with two pip processes at once.

Why: `pip install -e '.[dev]'` resolves (~35 s here), then unpacks and byte-compiles ~8 GB of wheels
(torch + its CUDA libraries, TensorFlow, OpenVINO, ...) one after another on one core while the second
core idles: ~2.5 minutes on a fresh clone. Here:

1. the resolution comes from the lock file when it was made from this pyproject.toml on this kind of
   machine (`tools/install-lock.json`, written by `--write-lock`), else from `pip install --dry-run
   --report`;
2. the wheels are fetched, downloads kept in ~/.cache/ofa-factory/wheels for the next install
   (PIP_NO_CACHE_DIR=1: not kept), and checked against the lock's sha256 two at a time, 1 MB per read without
   read-ahead (on a slow disk the pip processes' own reads then do not queue behind the checks'), while the
   pip processes of step 3 already install the ones checked (reading them is the slow part on a cold disk);
3. `--jobs` pip processes install them with `--no-deps`, each taking, whenever it is free, its share of the
   wheels checked by then (about half of those plus what the other still has to do, by estimated work);
   wheels that write a same file never go to two processes at once;
4. the project itself is installed (editable) by a third pip at the same time;
5. the files pip wrote for the wheels are kept as hard links in ~/.cache/ofa-factory/site/<key> (key: the
   locked wheels and the interpreter; the two most recent are kept), so the next venv made from the same
   lock on this machine (a second clone, `make clean`, CI) links them instead of unpacking ~8 GB again:
   seconds instead of minutes. As with uv's hard-link mode, a file edited in place inside one venv is the
   same file in the others; the cache notices (sizes and modification times are checked before every use)
   and is dropped then.

Anything unexpected (a lock from another machine, a package that is not a wheel, a failed download or
group) falls back to the next way down, the last being one plain `pip install`, which is always right.

    python tools/install.py .venv/bin/python '.[dev]'
    python tools/install.py .venv/bin/python '.[dev]' --write-lock   # after changing dependencies
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "tools" / "install-lock.json"
# pip here warns once per missing local index folder; everything else it prints is kept
NOISE = "is ignored: it is neither a file nor a directory"
PY_COST = 26  # see install_cost
PY_UNCOMPILED_COST = 2
ENV_KEYS = ("implementation_name", "python_version", "platform_machine", "sys_platform")
VERBOSE = False  # --verbose: each pip process's batches, with times


class Fallback(Exception):
    """This way of installing does not apply here; the next one down is tried."""


def run_pip(python: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True)


def show(proc: subprocess.CompletedProcess[str]) -> None:
    for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
        for line in stream.splitlines():
            if NOISE not in line:
                print(line, file=out)


def lock_key(requirement: str) -> str:
    """What a lock was resolved from: the requirement and pyproject.toml's bytes."""
    return hashlib.sha256(requirement.encode() + b"\0" + (ROOT / "pyproject.toml").read_bytes()).hexdigest()


def resolve(python: str, requirement: str) -> dict:
    """pip's resolution of `-e requirement`: its `--report` (install list + environment markers)."""
    with tempfile.TemporaryDirectory(prefix="factory-install-") as tmp:
        report = Path(tmp) / "report.json"
        proc = run_pip(python, ["install", "--dry-run", "--quiet", "--report", str(report), "-e", requirement])
        if proc.returncode != 0 or not report.is_file():
            show(proc)
            raise Fallback("pip could not resolve")
        return json.loads(report.read_text())


def wheels_of(report: dict) -> list[dict]:
    """(name, version, url, sha256) of every package but the project; Fallback when one is no wheel."""
    wheels = []
    for item in report.get("install", []):
        info = item.get("download_info", {})
        if info.get("dir_info", {}).get("editable"):
            continue
        url = info.get("url", "")
        if not urlparse(url).path.endswith(".whl"):
            raise Fallback(f"{item['metadata']['name']} is not a wheel")
        wheels.append({"name": item["metadata"]["name"], "version": item["metadata"]["version"], "url": url,
                       "sha256": info.get("archive_info", {}).get("hashes", {}).get("sha256")})
    return wheels


def environment(python: str) -> dict[str, str]:
    code = ("import json, platform, sys; print(json.dumps({'implementation_name': sys.implementation.name, "
            "'python_version': '%d.%d' % sys.version_info[:2], 'platform_machine': platform.machine(), "
            "'sys_platform': sys.platform}))")
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def locked_wheels(python: str, requirement: str) -> list[dict]:
    """The lock's wheels when it was made for this requirement, pyproject.toml and kind of machine."""
    if not LOCK.is_file():
        raise Fallback(f"no {LOCK.name}")
    lock = json.loads(LOCK.read_text())
    if lock.get("key") != lock_key(requirement):
        raise Fallback(f"{LOCK.name} was made from another pyproject.toml (refresh it with --write-lock)")
    if lock.get("environment") != environment(python):
        raise Fallback(f"{LOCK.name} was made for {lock.get('environment')}")
    return lock["wheels"]


def cache_root() -> Path | None:
    """~/.cache/ofa-factory (XDG_CACHE_HOME honoured); None when PIP_NO_CACHE_DIR turns caching off, as it
    does pip's."""
    if os.environ.get("PIP_NO_CACHE_DIR", "").lower() in ("1", "true", "yes", "on"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ofa-factory"


def wheel_cache() -> Path | None:
    """Where downloaded wheels are kept between installs (pip keeps its downloads too): a second clone
    on this machine installs without the network."""
    root = cache_root()
    return None if root is None else root / "wheels"


READ_CHUNK = 1 << 20  # bytes a check asks the disk for at once: see sha256_of


def sha256_of(path: Path) -> str:
    """The file's sha256, read without the kernel's read-ahead, READ_CHUNK at a time: on a slow disk a check
    then keeps at most that much queued ahead of the pip processes' own small reads (their imports), which
    with 8 MB read-ahead over four readers waited behind ~32 MB each (docs/decisions.md)."""
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        with contextlib.suppress(AttributeError, OSError):  # no such call here, or not a regular file
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        while chunk := f.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(wheels: list[dict], folder: Path, cache: Path | None = None, verify: bool = True) -> list[Path]:
    """Each wheel as a file in `folder` (linked from disk or the cache, else downloaded into the cache),
    its sha256 checked against the resolution's (`verify=False`: left to the caller, see CheckedWheels)."""

    def download(url: str, path: Path) -> None:
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with urllib.request.urlopen(url, timeout=180) as response, partial.open("wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
            partial.replace(path)  # a cached file is always whole
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise Fallback(f"{url}: {exc}") from None

    def get(wheel: dict) -> Path:
        parsed = urlparse(wheel["url"])
        path = folder / Path(unquote(parsed.path)).name
        sha, checked = wheel.get("sha256"), False
        if parsed.scheme == "file":
            source = Path(unquote(parsed.path))
            if not source.is_file():
                raise Fallback(f"{source}: not on this machine")
        elif cache is not None and sha:
            source = cache / sha[:2] / sha / path.name
            checked = source.is_file() and (not verify or sha256_of(source) == sha)
            if not checked:  # absent, or damaged since
                source.parent.mkdir(parents=True, exist_ok=True)
                download(wheel["url"], source)
        else:
            download(wheel["url"], path)
            source = path
        if source != path:
            path.symlink_to(source)
        if sha and verify and not checked and sha256_of(path) != sha:
            raise Fallback(f"{path.name}: sha256 differs from the resolution's")
        return path

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(get, wheels))


def written_files(wheel: Path) -> set[str]:
    """The files a wheel writes, .dist-info excluded (named after the distribution, unique): site-packages
    paths, scripts, data and headers by their scheme, console scripts by name (pip writes them to scripts)."""
    files = set()
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            if name.endswith("/"):
                continue
            if parts[0].endswith(".dist-info"):
                if len(parts) == 2 and parts[1] == "entry_points.txt":
                    files |= {f"scripts:{s}" for s in _console_scripts(zf.read(name).decode("utf-8", "replace"))}
                continue
            files.add(_site_path(name) or f"{parts[1]}:{'/'.join(parts[2:])}")
    return files


def _site_path(name: str) -> str | None:
    """Where a wheel's file `name` lands relative to site-packages (None: scripts, headers, data)."""
    parts = name.split("/")
    if parts[0].endswith(".data") and len(parts) > 2:  # purelib/platlib land in site-packages
        return "/".join(parts[2:]) if parts[1] in ("purelib", "platlib") else None
    return name


def _console_scripts(text: str) -> set[str]:
    names, section = set(), ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section in ("[console_scripts]", "[gui_scripts]") and "=" in line:
            names.add(line.split("=", 1)[0].strip())
    return names


def groups_of(wheels: list[Path]) -> list[list[Path]]:
    """Wheels joined when they write a same file (union-find), so no two pip processes ever write one path
    at once. Wheels that only share folders (the `nvidia` namespace of the CUDA wheels, `google`) stay
    apart: pip creates a folder that exists already without complaint."""
    parent = list(range(len(wheels)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, wheel in enumerate(wheels):
        for path in written_files(wheel):
            if path in owner:
                parent[find(i)] = find(owner[path])
            else:
                owner[path] = i
    joined: dict[int, list[Path]] = {}
    for i, wheel in enumerate(wheels):
        joined.setdefault(find(i), []).append(wheel)
    return list(joined.values())


# ----- byte-code for what the project imports -------------------------------------------------------------
IMPORTS = ROOT / "tools" / "install-imports.txt"
# compiles each path read from stdin as pip would (a timestamp-checked .pyc in __pycache__) and prints "source\tpyc";
# a file that does not compile (pip skips those too) prints nothing
COMPILE = ("import py_compile, sys\n"
           "for line in sys.stdin:\n"
           "    try:\n"
           "        source = line.rstrip('\\n')\n"
           "        print(source, py_compile.compile(source, doraise=True), sep='\\t')\n"
           "    except py_compile.PyCompileError:\n"
           "        pass\n")


class Bytecode:
    """Which modules the pip processes of this install byte-compile: all (imported None, pip's default) or, when
    tools/install-imports.txt was recorded with the locked wheels, only those (compile_imported, after pip)."""

    imported: frozenset[str] | None = None


BYTECODE = Bytecode()


def wheels_key(wheels: list[dict]) -> str:
    """Which locked wheels an imports list was recorded with: their names and versions."""
    return hashlib.sha256("\n".join(sorted(f"{_normal(w['name'])}=={w['version']}" for w in wheels)).encode()
                          ).hexdigest()


def imported_modules(wheels: list[dict], path: Path | None = None) -> frozenset[str] | None:
    """The site-packages paths (e.g. `torch/nn/modules/conv.py`) of the modules the demo and the test suite
    imported when `path` was recorded (tools/record_imports.py), if it was recorded with these wheels; else
    None, and pip byte-compiles every module as usual."""
    try:
        lines = (path or IMPORTS).read_text().splitlines()
    except OSError:
        return None
    if not lines or lines[0] != f"# wheels {wheels_key(wheels)}":
        return None
    return frozenset(line for line in lines if line and not line.startswith("#"))


def compile_imported(python: str, site: Path, wheels: list[Path], imported: frozenset[str]) -> int:
    """Byte-compile the modules of `wheels` (installed with --no-compile) that are in `imported`, with the venv's
    interpreter, and add each .pyc to its distribution's RECORD as pip does (so uninstalling removes it and a
    kept install keeps it). Returns how many were compiled."""
    record_of: dict[str, Path] = {}  # module -> its distribution's RECORD
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            info = next((n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info")), None)
        if info is not None:
            record_of.update((m, site / info / "RECORD") for m in imported & written_files(wheel))
    if not record_of:
        return 0
    proc = subprocess.run([python, "-c", COMPILE], input="".join(f"{site / m}\n" for m in sorted(record_of)),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise Fallback(f"byte-compiling {', '.join(w.name for w in wheels)} failed: {proc.stderr.strip()[-300:]}")
    made: dict[Path, list[str]] = {}
    for line in proc.stdout.splitlines():
        source, _, compiled = line.partition("\t")
        made.setdefault(record_of[os.path.relpath(source, site)], []).append(os.path.relpath(compiled, site))
    for record, rows in made.items():
        lead = "" if record.read_bytes().endswith(b"\n") else "\n"
        with record.open("a") as f:
            f.write(lead + "".join(f"{row},,\n" for row in rows))
    return sum(len(rows) for rows in made.values())


def install_cost(wheel: Path) -> int:
    """The work of installing a wheel, in bytes-written units: a byte of Python source that is byte-compiled
    costs ~26x a byte of anything else, one only unpacked ~2x (fitted on two pip processes' wall times with and
    without --no-compile, docs/decisions.md). Which sources are compiled: see BYTECODE."""
    return _install_cost(wheel, BYTECODE.imported)


@functools.cache  # read for the checking order and again for every hand-out
def _install_cost(wheel: Path, imported: frozenset[str] | None) -> int:
    def weight(name: str) -> int:
        if not name.endswith(".py"):
            return 1
        return PY_COST if imported is None or _site_path(name) in imported else PY_UNCOMPILED_COST

    with zipfile.ZipFile(wheel) as zf:
        return sum(i.file_size * weight(i.filename) for i in zf.infolist())


# ----- installed files of an earlier install, linked into the next venv ---------------------------------
SITE_MANIFEST = "manifest.json"
SITES_KEPT = 2  # installs kept in the cache: the current lock and the one before (a branch switch)


def venv_layout(python: str) -> dict[str, str]:
    """The venv's root, its site-packages and scripts folders (absolute), and the interpreter's version."""
    code = ("import json, sys, sysconfig; print(json.dumps({'root': sys.prefix, 'python': sys.executable, "
            "'version': sys.version, **{k: sysconfig.get_path(k) for k in ('purelib', 'platlib', 'scripts')}}))")
    layout = json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)
    if layout["purelib"] != layout["platlib"]:
        raise Fallback("site-packages is split in two (purelib != platlib)")
    return layout


def site_cache(layout: dict[str, str], wheels: list[dict]) -> Path | None:
    """Where the files of an install of exactly `wheels` into this kind of interpreter are kept."""
    root = cache_root()
    if root is None:
        return None
    what = json.dumps({"version": layout["version"], "site": os.path.relpath(layout["purelib"], layout["root"]),
                       "wheels": sorted((w["name"], w["version"], w.get("sha256") or w["url"]) for w in wheels)})
    return root / "site" / hashlib.sha256(what.encode()).hexdigest()


def _normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def dist_infos(site: Path) -> dict[tuple[str, str], Path]:
    """The .dist-info folders in `site` by (normalised name, version)."""
    infos = {}
    for info in site.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        infos[(_normal(name), version)] = info
    return infos


def installed_files(layout: dict[str, str], wheels: list[dict]) -> list[str]:
    """Every file pip wrote for `wheels` (their RECORDs: modules, byte-code, dist-info, scripts, data), as
    paths relative to the venv's root."""
    site, root = Path(layout["purelib"]), Path(layout["root"])
    infos = dist_infos(site)
    files: set[str] = set()
    for wheel in wheels:
        info = infos.get((_normal(wheel["name"]), wheel["version"]))
        if info is None or not (info / "RECORD").is_file():
            raise Fallback(f"{wheel['name']} {wheel['version']}: no RECORD in {site}")
        for row in csv.reader((info / "RECORD").read_text().splitlines()):
            path = row[0] if row else ""
            if not path:
                continue
            rel = os.path.relpath(os.path.normpath(site / path), root)
            if rel.startswith(".."):
                raise Fallback(f"{wheel['name']} writes outside the venv ({path})")
            files.add(rel)
    return sorted(files)


def save_site(layout: dict[str, str], wheels: list[dict], cache: Path) -> None:
    """Hard links to the files just installed, kept in `cache` with their sizes and modification times (a
    file edited in place later shows up there and spoils the cache, see link_site). Same filesystem only."""
    root = Path(layout["root"])
    files = installed_files(layout, wheels)
    partial = cache.with_name(f".{cache.name}.{os.getpid()}.part")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        stats = {}
        for rel in files:
            source, kept = root / rel, partial / "tree" / rel
            kept.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, kept)
            st = kept.stat()
            stats[rel] = [st.st_size, st.st_mtime_ns]
        manifest = {"python": layout["python"], "scripts": os.path.relpath(layout["scripts"], root), "files": stats}
        (partial / SITE_MANIFEST).write_text(json.dumps(manifest))
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial.rename(cache)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # left only when another install saved the same first
    prune_sites(cache.parent, keep=SITES_KEPT)


def prune_sites(folder: Path, keep: int) -> list[Path]:
    """Drop all but the `keep` most recently kept installs in `folder` (each lock or interpreter change keeps
    a new one; the files stay on disk while a venv still links them). Returns what was dropped."""
    kept = sorted((d for d in folder.iterdir() if (d / SITE_MANIFEST).is_file()),
                  key=lambda d: (d / SITE_MANIFEST).stat().st_mtime_ns, reverse=True)
    for old in kept[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return kept[keep:]


def uninstall_bundled(python: str, site: Path, wheels: list[dict]) -> None:
    """Uninstall what the new venv came with (setuptools, with Python 3.11) and `wheels` pin in another version,
    before anything else is installed: a pip process replacing it while the other lists the installed
    distributions made that one warn about a half-removed `~etuptools`."""
    present = {name for name, _ in dist_infos(site)}
    stale = [w["name"] for w in wheels if _normal(w["name"]) in present]
    if stale:
        proc = run_pip(python, ["uninstall", "--yes", "--quiet", *stale])
        if proc.returncode != 0:
            raise Fallback(f"could not uninstall {', '.join(stale)} first")


def link_site(python: str, layout: dict[str, str], wheels: list[dict], cache: Path) -> None:
    """Install `wheels` by linking the files an earlier install kept in `cache` (scripts are copied with
    their interpreter line pointing at this venv). Checked before anything is linked: every kept file still
    has the size and modification time it had (else the cache is dropped), and none is in this venv yet;
    a failure half-way removes what was linked. Packages the new venv came with (setuptools) and that the
    lock pins are uninstalled first, as pip would."""
    manifest = json.loads((cache / SITE_MANIFEST).read_text())
    tree, root = cache / "tree", Path(layout["root"])
    for rel, (size, mtime) in manifest["files"].items():
        try:
            st = (tree / rel).stat()
            changed = (st.st_size, st.st_mtime_ns) != (size, mtime)
        except OSError:  # removed since: as spoilt as an edited one, and it would stay so
            changed = True
        if changed:
            shutil.rmtree(cache, ignore_errors=True)
            raise Fallback(f"{tree / rel} changed since it was kept; cache dropped")
    uninstall_bundled(python, Path(layout["purelib"]), wheels)
    clash = next((rel for rel in manifest["files"] if (root / rel).exists()), None)
    if clash is not None:
        raise Fallback(f"{root / clash} exists already")
    scripts, old_python = manifest["scripts"] + os.sep, manifest["python"].encode()
    made: list[Path] = []
    try:
        for rel in manifest["files"]:
            source, target = tree / rel, root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel.startswith(scripts):
                target.write_bytes(source.read_bytes().replace(old_python, layout["python"].encode()))
                shutil.copymode(source, target)
            else:
                os.link(source, target)
            made.append(target)
    except OSError as exc:
        for path in made:
            path.unlink(missing_ok=True)
        raise Fallback(f"linking from {cache} failed: {exc}") from None


def install_wheels(python: str, wheels: list[dict], jobs: int) -> None:
    """`wheels` into the venv of `python`: linked from an earlier install's files when this machine kept
    them (a second clone installs in seconds), else fetched and installed by `jobs` pip processes, the
    installed files then kept for the next time."""
    layout = venv_layout(python)
    cache = site_cache(layout, wheels)
    if cache is not None and (cache / SITE_MANIFEST).is_file():
        try:
            link_site(python, layout, wheels, cache)
            print(f"installed {len(wheels)} packages as links to the files of an earlier install ({cache})",
                  flush=True)
            return
        except (Fallback, OSError) as why:
            print(f"installing without the files of an earlier install ({why})", flush=True)
    _pip_install_wheels(python, wheels, jobs, Path(layout["purelib"]))
    if cache is not None:
        try:
            save_site(layout, wheels, cache)
        except (Fallback, OSError) as why:  # e.g. the cache on another filesystem: the next install is a normal one
            print(f"installed files not kept for the next install ({why})", flush=True)


class CheckedWheels:
    """The wheels' sha256 checked by a background pool, in the order the pip processes will want them, and handed
    to whichever pip process is free as they are checked. Reading 3.9 GB of wheels from a cold disk took 3-100 s
    here (docs/decisions.md), installing them ~60 s of CPU per pip process: this way the two overlap, and
    neither pip process waits for wheels the other could not take either. A mismatch is a Fallback (a
    mismatching file from the download cache is dropped from it first, so the next install downloads it
    again)."""

    PATIENCE = 3.0  # s a free pip process waits for more checked wheels once some are there: fewer pip starts
    READERS = 2  # wheels read at once

    def __init__(self, order: list[Path], sha: dict[Path, str | None], cache: Path | None,
                 groups: list[list[Path]] | None = None, jobs: int = 2) -> None:
        import threading

        self._sha, self._cache, self._jobs = sha, cache, jobs
        self._cond = threading.Condition()
        self._checked: set[Path] = set()
        self._error: Fallback | None = None
        self._left = list(order)  # not handed out yet, in checking order
        self._group = {p: i for i, g in enumerate(groups or [[p] for p in order]) for p in g}
        self._held: dict[int, int] = {}  # group -> the pip process installing some of it now
        self._batch: dict[int, tuple[int, float]] = {}  # pip process -> (cost, start) of what it installs now
        self._done_cost, self._done_seconds = 0, 0.0  # finished batches: pip's pace on this machine
        self._start = time.monotonic()
        self._pool = ThreadPoolExecutor(self.READERS)
        for path in order:
            self._pool.submit(self._check, path)

    def _check(self, path: Path) -> None:
        error = None
        try:
            sha = self._sha[path]
            if sha and sha256_of(path) != sha:
                source = path.resolve()
                if self._cache is not None and source.is_relative_to(self._cache.resolve()):
                    source.unlink(missing_ok=True)
                error = Fallback(f"{path.name}: sha256 differs from the resolution's")
        except OSError as exc:
            error = Fallback(f"{path.name}: {exc}")
        with self._cond:
            self._checked.add(path)
            self._error = self._error or error
            self._cond.notify_all()
            if VERBOSE and len(self._checked) == len(self._sha):
                print(f"  [{time.monotonic() - self._start:5.1f} s] all {len(self._sha)} wheels read and checked",
                      flush=True)

    def fail(self, why: str) -> None:
        """Stop handing out wheels: every later take() raises Fallback(why)."""
        with self._cond:
            self._error = self._error or Fallback(why)
            self._cond.notify_all()

    def take(self, lane: int) -> list[Path]:
        """The next wheels for pip process `lane` (its previous batch is done): checked ones of groups no other
        process holds, about its fair share of those (see _share). Waits for the first, then up to PATIENCE s
        while more are being read. [] when every wheel has been handed out."""
        deadline = None
        with self._cond:
            self._finish(lane)
            while True:
                if self._error is not None:
                    raise self._error
                if not self._left:
                    return []
                ready = [p for p in self._left
                         if p in self._checked and self._held.get(self._group[p], lane) == lane]
                now = time.monotonic()
                if ready and deadline is None:
                    deadline = now + self.PATIENCE
                if ready and (now >= deadline or all(p in self._checked for p in self._left)):
                    batch = self._share(lane, ready, now)
                    for p in batch:
                        self._left.remove(p)
                        self._held[self._group[p]] = lane
                    self._batch[lane] = (sum(install_cost(p) for p in batch), now)
                    self._cond.notify_all()  # a process waiting for the last wheels can end now
                    return batch
                self._cond.wait(None if deadline is None else deadline - now)

    def _finish(self, lane: int) -> None:
        if lane in self._batch:
            cost, start = self._batch.pop(lane)
            self._done_cost += cost
            self._done_seconds += time.monotonic() - start
        self._held = {g: k for g, k in self._held.items() if k != lane}
        self._cond.notify_all()

    def _share(self, lane: int, ready: list[Path], now: float) -> list[Path]:
        """As much of `ready` as makes this process end when the others do, were it all the work left: half of
        (ready + what the others still have to do) with two processes, their remainder estimated from pip's pace
        so far (unknown yet: their whole batch). In checking order, at least one wheel."""
        pace = self._done_cost / self._done_seconds if self._done_seconds > 0 else 0.0
        others = sum(max(0.0, cost - pace * (now - start)) if pace else cost
                     for k, (cost, start) in self._batch.items() if k != lane)
        total = sum(install_cost(p) for p in ready)
        target = min(total, (total + others) / self._jobs)
        batch, cost = [], 0
        for p in ready:
            c = install_cost(p)
            if batch and abs(cost + c - target) >= abs(cost - target):
                continue  # another, smaller one may still fit
            batch.append(p)
            cost += c
        return batch

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _pip_install_wheels(python: str, wheels: list[dict], jobs: int, site: Path) -> None:
    import threading

    bundled = ThreadPoolExecutor(1)  # while the wheels are being read
    uninstalled = bundled.submit(uninstall_bundled, python, site, wheels)
    bundled.shutdown(wait=False)
    BYTECODE.imported = imported = imported_modules(wheels)
    no_compile = [] if imported is None else ["--no-compile"]
    with tempfile.TemporaryDirectory(prefix="factory-wheels-") as tmp:
        cache = wheel_cache()
        files = fetch(wheels, Path(tmp), cache, verify=False)
        pinned = {f: f"{w['name']}=={w['version']}" for f, w in zip(files, wheels, strict=True)}
        print(f"installing {len(files)} packages with {jobs} pip processes"
              + ("" if imported is None else f", byte-compiling the {len(imported)} modules in {IMPORTS.name}"),
              flush=True)
        # most pip work per byte read first: on a slow disk the pip processes are busy while the big, cheap to
        # install wheels (CUDA libraries) are still being read
        order = sorted(files, key=lambda f: -install_cost(f) / max(1, f.stat().st_size))
        checked = CheckedWheels(order, {f: w.get("sha256") for f, w in zip(files, wheels, strict=True)}, cache,
                                groups_of(files), jobs)
        failures: list[str] = []
        start = time.monotonic()

        def lane(k: int) -> None:
            try:
                while batch := checked.take(k):
                    began = time.monotonic()
                    # by name==version from the folder (not by file path): pip records them as from an index
                    proc = run_pip(python, ["install", "--quiet", "--no-deps", "--no-index", *no_compile,
                                            "--find-links", tmp, *(pinned[f] for f in batch)])
                    if proc.returncode == 0 and imported is not None:
                        compile_imported(python, site, batch, imported)
                    if VERBOSE:
                        names = ", ".join(pinned[f].split("==")[0] for f in batch[:4]) + ", ..." * (len(batch) > 4)
                        print(f"  [{began - start:5.1f} s] pip {k}: {len(batch)} wheels, "
                              f"{sum(f.stat().st_size for f in batch) / 1e6:.0f} MB, {time.monotonic() - began:.1f} s "
                              f"({names})", flush=True)
                    show(proc)
                    if proc.returncode != 0:
                        failures.append("a pip process failed")
                        checked.fail(failures[-1])
                        return
            except Fallback as why:
                failures.append(str(why))
                checked.fail(failures[-1])

        try:
            uninstalled.result()
        except Fallback:
            checked.close()
            raise
        threads = [threading.Thread(target=lane, args=(k,)) for k in range(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        checked.close()
    if failures:
        raise Fallback(failures[0])


def parallel_install(python: str, requirement: str, jobs: int) -> None:
    """Lock -> else fresh resolution; then the wheels in parallel and the project. Fallback if neither."""
    try:
        wheels = locked_wheels(python, requirement)
    except Fallback as why:
        print(f"resolving with pip ({why})", flush=True)
        wheels = wheels_of(resolve(python, requirement))
    # the project itself (editable: a .pth and a finder, no wheel shares its paths) alongside the wheels
    project = subprocess.Popen([python, "-m", "pip", "install", "--quiet", "--no-deps", "-e",
                                requirement.split("[")[0]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        install_wheels(python, wheels, jobs)
    finally:
        out, err = project.communicate()
        show(subprocess.CompletedProcess(project.args, project.returncode, out, err))
    if project.returncode != 0:
        raise Fallback("the project's own install failed")


def write_lock(python: str, requirement: str) -> None:
    report = resolve(python, requirement)
    lock = {"key": lock_key(requirement), "requirement": requirement,
            "environment": {k: report["environment"][k] for k in ENV_KEYS},
            "made_by": "python tools/install.py PYTHON REQUIREMENT --write-lock", "wheels": wheels_of(report)}
    LOCK.write_text(json.dumps(lock, indent=1) + "\n")
    print(f"wrote {LOCK} ({len(lock['wheels'])} wheels)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("python", help="the venv's python")
    parser.add_argument("requirement", help="what to install editable, e.g. '.[dev]'")
    parser.add_argument("--jobs", type=int, default=min(2, len(os.sched_getaffinity(0))),
                        help="pip processes at once (default: 2, or 1 on a 1-core machine)")
    parser.add_argument("--write-lock", action="store_true", help=f"resolve and write {LOCK.name}, install nothing")
    parser.add_argument("--verbose", action="store_true", help="print each pip process's batches, with times")
    args = parser.parse_args(argv)
    global VERBOSE
    VERBOSE = args.verbose
    if args.write_lock:
        write_lock(args.python, args.requirement)
        return 0
    start = time.monotonic()
    try:
        if args.jobs < 2:
            raise Fallback("one job")
        parallel_install(args.python, args.requirement, args.jobs)
    except Fallback as why:
        print(f"installing with one pip ({why})", flush=True)
        proc = run_pip(args.python, ["install", "--quiet", "-e", args.requirement])
        show(proc)
        if proc.returncode != 0:
            return proc.returncode
    print(f"installed in {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
