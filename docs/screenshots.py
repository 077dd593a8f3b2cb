"""Look at the built site as a user would: serve ``site/`` and take headless Chromium screenshots.

    make docs && python docs/screenshots.py [--site site] [--out site-screenshots] [--width 1280]

Writes one PNG per page (the home page, a guide page, reference pages) into ``--out`` and prints
their paths; open them and look. Needs Chromium (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

PAGES = {
    "home": "",
    "guide-concepts": "concepts/",
    "guide-getting-started": "getting-started/",
    "reference-config": "reference/config/",
    "reference-cli": "reference/cli/",
    "reference-api-objective": "reference/api/objective/",
    "evidence-results": "results/",
}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("no Chromium found: apt-get install chromium")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def shoot(browser: str, url: str, out: Path, width: int, height: int) -> None:
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--window-size={width},{height}", f"--screenshot={out}", url],
        check=True, capture_output=True, timeout=120,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=Path("site"), help="the built site (make docs)")
    parser.add_argument("--out", type=Path, default=Path("site-screenshots"), help="where the PNGs go")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        sys.exit(f"{args.site}/index.html not found: build the site first (make docs)")
    args.out.mkdir(parents=True, exist_ok=True)
    browser = chromium()
    server, base = serve(args.site)
    try:
        for name, page in PAGES.items():
            out = args.out / f"{name}.png"
            shoot(browser, base + page, out.resolve(), args.width, args.height)
            print(out)
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
