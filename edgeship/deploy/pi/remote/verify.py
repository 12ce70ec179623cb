"""Check every file of this bundle against manifest.json (sha256); exit 2 on any difference.

    python3 verify.py          # run by install.sh before anything is installed

Standard library only: it runs on the device before the venv exists.
"""

import hashlib
import json
import os
import sys

# Made on the device after unpacking, never part of the manifest.
IGNORED = {"manifest.json", "venv", "venv.lock", "__pycache__", ".edgeship-release.json"}


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def problems(root):
    """The differences between the files under `root` and its manifest, as short strings."""
    try:
        with open(os.path.join(root, "manifest.json"), encoding="utf-8") as handle:
            files = json.load(handle)["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"manifest.json unreadable ({err})"]
    found = []
    for rel, want in sorted(files.items()):
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            found.append(f"{rel} missing")
        elif _sha256(path) != want:
            found.append(f"{rel} sha256 differs")
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED)
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
            if rel not in files and name not in IGNORED and not name.endswith(".pyc"):
                found.append(f"{rel} not in the manifest")
    return found


def main():
    root = os.path.dirname(os.path.abspath(__file__))
    found = problems(root)
    if found:
        shown = "; ".join(found[:5]) + ("; ..." if len(found) > 5 else "")
        print(
            f"error: manifest mismatch: the bundle's files do not match manifest.json "
            f"({len(found)}: {shown}); refusing to install it, rebuild or re-copy the bundle. "
            f"Received: bundle={root}",
            file=sys.stderr,
        )
        return 2
    print("manifest ok: every file matches its sha256")
    return 0


if __name__ == "__main__":
    sys.exit(main())
