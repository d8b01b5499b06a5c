"""Vendor htmx (the console's one front-end library) from the npm registry, reproducibly.

    python scripts/vendor_htmx.py          write the pinned version's htmx.min.js and LICENSE
    python scripts/vendor_htmx.py --check  only check that the committed file is that one

``npm pack`` fetches the package tarball; its SHA-512 must be the registry's integrity
pinned here, and the file taken from it must have the pinned SHA-256, so running this again
gives the same bytes. No Node build step: the file is committed, and nothing else of npm is
used. To move to another version, change VERSION and INTEGRITY (``npm view
htmx.org@VERSION dist.integrity``), run this, and pin the new SHA256 it prints.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "htmx.org"
VERSION = "2.0.11"
INTEGRITY = (
    "sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qt"
    "bnyzDDWFvBTqjnIMCgELTNt636dtamA=="
)
SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
STATIC = (
    Path(__file__).resolve().parent.parent
    / "services/config-api/src/mailintake_config_api/console/static"
)
TARGET = STATIC / "htmx.min.js"
LICENSE = STATIC / "htmx.LICENSE"


def committed_is_pinned() -> bool:
    return TARGET.exists() and hashlib.sha256(TARGET.read_bytes()).hexdigest() == SHA256


def vendor() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent", "--pack-destination", tmp],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        packed = next(Path(tmp).glob("*.tgz"))
        tarball = packed.read_bytes()
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
        if digest != INTEGRITY:
            sys.exit(f"{PACKAGE}@{VERSION}: the tarball's integrity is {digest}, not {INTEGRITY}")
        with tarfile.open(packed) as archive:
            script = archive.extractfile("package/dist/htmx.min.js")
            license_text = archive.extractfile("package/LICENSE")
            assert script is not None
            assert license_text is not None
            body = script.read()
            TARGET.write_bytes(body)
            LICENSE.write_bytes(license_text.read())
    print(f"{TARGET}: {PACKAGE} {VERSION}, sha256 {hashlib.sha256(body).hexdigest()}")
    if not committed_is_pinned():
        sys.exit(f"the file's sha256 is not the pinned {SHA256}: pin the new one")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the committed file")
    if parser.parse_args().check:
        sys.exit(0 if committed_is_pinned() else f"{TARGET} is not {PACKAGE} {VERSION}")
    vendor()


if __name__ == "__main__":
    main()
