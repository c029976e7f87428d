"""Write or check ``requirements-lock.txt``: the exact versions the README's commands install.

``pyproject.toml`` keeps ranges for people who ``pip install timm-nas`` into their own environment; the lock pins
everything our own set-up installs (pip included), so a release on the package registry cannot change what
``make demo`` / ``make test`` / CI run. ``make lock`` regenerates it from the ranges in a scratch venv.

Usage::

    python tools/lockfile.py write VENV_PYTHON LOCK   # freeze that venv into LOCK
    python tools/lockfile.py check VENV_PYTHON LOCK   # fail unless that venv holds exactly LOCK's versions
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HEADER = """\
# The exact versions `make demo`, `make test`, `make contract` and CI install (pip included), as pip
# constraints. Regenerate with `make lock` (from the ranges in pyproject.toml) and commit deliberately: the venv is
# rebuilt whenever this file changes. `make test-latest` runs the suite against the newest releases instead.
# torch here is the registry's default (CUDA) build; it runs on the CPU.
"""
_LINE = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def frozen(python: str) -> dict[str, str]:
    """``{canonical name: version}`` of everything installed in that venv except the editable project."""
    out = subprocess.run([python, "-m", "pip", "freeze", "--all", "--exclude-editable"], check=True,
                         capture_output=True, text=True).stdout
    pins: dict[str, str] = {}
    for line in out.splitlines():
        m = _LINE.match(line.strip())
        if m is None:
            raise SystemExit(f"lockfile: cannot pin {line!r} (not a registry release); install it from the registry")
        if _canonical(m.group(1)) != "timm-nas":
            pins[_canonical(m.group(1))] = m.group(2)
    return pins


def read(lock: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, line in enumerate(lock.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = _LINE.match(line)
        if m is None:
            raise SystemExit(f"{lock}:{n}: expected 'name==version', got {line!r}")
        pins[_canonical(m.group(1))] = m.group(2)
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("write", "check"))
    parser.add_argument("python", help="the venv's python")
    parser.add_argument("lock", type=Path)
    args = parser.parse_args(argv)
    pins = frozen(args.python)
    if args.action == "write":
        body = "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
        args.lock.write_text(HEADER + body, encoding="utf-8")
        print(f"wrote {args.lock}: {len(pins)} pinned packages")
        return 0
    want = read(args.lock)
    problems = [f"{n}: installed {pins.get(n, 'nothing')}, lock {want.get(n, 'nothing')}"
                for n in sorted(set(pins) | set(want)) if pins.get(n) != want.get(n)]
    if problems:
        print(f"the venv differs from {args.lock} (rebuild it with `make clean-venv test`, or update the lock "
              f"deliberately with `make lock`):\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"venv matches {args.lock} ({len(pins)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
