"""Byte identity of the shipped recipes: run each recipe in recipes/ at IPC 2 on the
embedded model and hash every image's pixels and every latent's bytes.

    python benchmarks/identity.py --record docs/benchmarks/identity.json   # before a refactor
    python benchmarks/identity.py --check docs/benchmarks/identity.json    # after it

A refactor that must not change behaviour (e.g. moving the guidance code) must leave every
hash equal. Hashes depend on the torch build and the CPU's kernels: compare runs made on
one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def set_hash(out: Path) -> str:
    """One sha256 over every PNG's pixels and every latent's bytes, in sorted path order."""
    digest = hashlib.sha256()
    for path in sorted(out.rglob("*")):
        if path.suffix == ".png":
            with Image.open(path) as image:
                digest.update(path.relative_to(out).as_posix().encode())
                digest.update(np.asarray(image).tobytes())
        elif path.suffix == ".safetensors":
            digest.update(path.relative_to(out).as_posix().encode())
            digest.update(load_file(path)["latent"].numpy().tobytes())
    return digest.hexdigest()


def hashes(ipc: int) -> dict[str, str]:
    import dmgd

    found = {}
    for recipe in sorted((ROOT / "recipes").glob("*.dmgd")):
        with tempfile.TemporaryDirectory() as tmp:
            dmgd.run(str(recipe), Path(tmp) / "out", ipc=ipc, seed=0)
            found[recipe.name] = set_hash(Path(tmp) / "out")
        print(f"{recipe.name:24s} {found[recipe.name][:16]}", flush=True)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ipc", type=int, default=2)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", type=Path, help="write the hashes to this JSON file")
    group.add_argument("--check", type=Path, help="compare the hashes with this JSON file")
    args = parser.parse_args()
    found = hashes(args.ipc)
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps({"ipc": args.ipc, "hashes": found}, indent=2) + "\n")
        return 0
    expected = json.loads(args.check.read_text())["hashes"]
    differ = sorted(name for name in expected if expected[name] != found.get(name))
    for name in differ:
        print(f"DIFFERENT: {name}: {expected[name][:16]} -> {found.get(name, '-')[:16]}")
    for name in sorted(found.keys() - expected.keys()):
        print(f"new (not recorded, not compared): {name} {found[name][:16]}")
    print(f"{len(expected) - len(differ)} of {len(expected)} recorded recipes byte-identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
