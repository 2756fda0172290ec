"""``python -m normapps.weights list``: every known weight entry and whether this machine has it."""
from __future__ import annotations

import argparse
import sys

from normapps.weights.files import status
from normapps.weights.registry import entries


def list_entries(out=sys.stdout) -> int:
    rows = []
    for entry in entries():
        ok, where = status(entry)
        rows.append((entry.name, entry.kind, "yes" if ok else "no", where, entry.licence))
    widths = [max(len(r[i]) for r in rows + [("name", "kind", "here", "", "")]) for i in range(3)]
    for name, kind, here, where, licence in rows:
        print(f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {here:<3}  {where}", file=out)
        print(f"{'':<{widths[0]}}  licence: {licence}", file=out)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normapps.weights",
                                     description="Pretrained weight sources known to normapps.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print every entry, whether it is on this machine and where")
    args = parser.parse_args(argv)
    if args.command == "list":
        return list_entries()
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
