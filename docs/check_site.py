"""The built site looked at in a real browser: every page served on 127.0.0.1 and rendered in Debian's headless
Chromium (/usr/bin/chromium, driven by Playwright; never a browser a tool downloads).

    python docs/check_site.py SITE_DIR [--screenshots DIR] [--chromium PATH]

Fails (exit code 1, one line per problem) on a page that does not load (HTTP error), one whose content did not
render (no `article` with an `h1`), a JavaScript error, an image that did not load (naturalWidth 0), and an
internal link whose page is missing or whose `#anchor` is not on it. External links are not followed (the
machine has no network beyond its registries). A full-page screenshot of every page goes to --screenshots.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

CHROMIUM = "/usr/bin/chromium"
# as root, in a closed network: no sandbox, no GPU, no background connections (they are refused, many at a time)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGES_NOT_LOADED = "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
LINKS = "[...document.querySelectorAll('article a[href]')].map(a => a.href)"
IDS = "[...document.querySelectorAll('[id]')].map(e => e.id)"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """The site on a free port of 127.0.0.1, in a daemon thread; (server, base URL)."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def pages(site: Path) -> list[str]:
    """Every page's path below the site root (`index.html` files; MkDocs' 404 page left out)."""
    return sorted(path.relative_to(site).parent.as_posix().removeprefix(".") for path in site.rglob("index.html"))


def page_name(url_path: str) -> str:
    return url_path.strip("/").replace("/", "-") or "home"


def check(site: Path, screenshots: Path | None, chromium: str) -> list[str]:
    from playwright.sync_api import sync_playwright

    server, base = serve(site)
    problems: list[str] = []
    ids_of: dict[str, set[str]] = {}  # page URL -> its element ids
    links_of: dict[str, list[str]] = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            for path in pages(site):
                url = urljoin(base, path + "/" if path else "")
                errors.clear()
                response = page.goto(url, wait_until="load")
                name = page_name(path)
                if response is None or not response.ok:
                    problems.append(f"{name}: HTTP {response.status if response else 'no response'}")
                    continue
                page.wait_for_load_state("networkidle")
                if page.locator("article h1").count() == 0:
                    problems.append(f"{name}: the page did not render (no article with an h1)")
                problems += [f"{name}: image did not load: {src}" for src in page.evaluate(IMAGES_NOT_LOADED)]
                problems += [f"{name}: JavaScript error: {error}" for error in errors]
                ids_of[url] = set(page.evaluate(IDS))
                links_of[url] = page.evaluate(LINKS)
                if screenshots is not None:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
    for url, links in links_of.items():
        name = page_name(urlparse(url).path)
        for link in links:
            target, anchor = urldefrag(link)
            if not target.startswith(base):
                continue  # external: not followed
            if target not in ids_of:  # a file of the site (a plot, results.json) rather than a page
                if not (site / urlparse(target).path.lstrip("/")).is_file():
                    problems.append(f"{name}: link to a missing page: {link}")
            elif anchor and anchor not in ids_of[target]:
                problems.append(f"{name}: link to a missing anchor: {link}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site (mkdocs build's site_dir)")
    parser.add_argument("--screenshots", type=Path, help="folder for a full-page PNG of every page")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"the browser (default {CHROMIUM})")
    args = parser.parse_args(argv)
    problems = check(args.site, args.screenshots, args.chromium)
    for problem in problems:
        print(f"check_site: {problem}", file=sys.stderr)
    count = len(pages(args.site))
    print(f"check_site: {count} pages rendered in {args.chromium}, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
