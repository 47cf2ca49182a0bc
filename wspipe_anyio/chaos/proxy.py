"""``python -m wspipe_anyio.chaos.proxy SETTINGS.json``: the proxy of a chaos run, run
exactly as ``wspipe serve`` runs it, from the merged settings chaos wrote."""

from __future__ import annotations

import json
import sys

from ..cli import build_options, serve


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as file:
        settings = json.load(file)
    return serve(build_options(settings))


if __name__ == "__main__":
    sys.exit(main())
