"""The web console in a real headless Chromium (the OS's `chromium` and `chromedriver`, which
`make browser` installs), driven by Selenium, against a whole in-process daemon and fake
downloader over loopback.

The daemon runs on the test's trio loop (`served`); the test's body drives the browser from a
worker thread (`in_browser`) and reaches the daemon through `Served.call` (the fake's knobs are
plain fields, read on every request). Every wait is explicit (`Browser.wait_for`), never a
sleep. One browser serves the whole session; each test gets a fresh daemon and a browser without
cookies. Every request the browser makes is recorded through Chrome's performance log, so a test
can check that the console reaches nothing but the daemon.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from actors.notify_urls import DEFAULT_USER_SCHEMES, NotificationSettings
from fake_downloader import Catalog, CatalogSpec, Knobs, build_catalog
from storage.users import Permission, Role
from tests.conftest import make_user
from tests.reliability.harness import ADMIN, ADMIN_PASSWORD
from tests.support.live import Live, daemon, fake

T = TypeVar("T")
REQUESTER, REQUESTER_PASSWORD = "rita", "rita-password-1"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
WAIT_S = 15
# Plain JSON webhooks allowed to "localhost" alone, so a test can aim at a receiver on loopback
# while "127.0.0.1" stays refused like any private address; one attempt, so a dead target is
# recorded failed at once.
NOTIFICATIONS = NotificationSettings(
    user_schemes=(*DEFAULT_USER_SCHEMES, "json"), user_hosts_allowed=("localhost",),
    max_attempts=1, timeout_sec=2.0,
)  # fmt: skip


def _first(paths: tuple[str, ...], name: str) -> str:
    for path in paths:
        if Path(path).exists():
            return path
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make browser` (Debian's chromium packages)")
    return found


@dataclass
class Served:
    """A daemon and a fake downloader running in a trio thread."""

    live: Live
    knobs: Knobs
    catalog: Catalog
    token: trio.lowlevel.TrioToken
    url: str

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """An admin's API call (the test's own view of the server, not the browser's)."""

        async def send() -> Any:
            response = await self.live.http.request(method, path, **kwargs)
            assert response.status_code < 400, response.text
            return response.json()

        return self.call(send)

    def album(self, index: int) -> tuple[str, str, str]:
        """(id, name, artist name) of the fake's album `index`."""
        catalog = self.catalog
        artist = catalog.artist_names[catalog.album_artist(index)]
        return catalog.album_ids[index], catalog.album_names[index], artist


@pytest.fixture
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """The daemon; parametrized indirectly with `{"downloads": False}`, it runs without the
    download manager."""
    downloads = getattr(request, "param", {}).get("downloads", True)
    spec = CatalogSpec(artists=3, albums_per_artist=3, tracks_per_album=4, audio_bytes=4096)
    knobs = Knobs()
    async with (
        fake(knobs, spec) as (url, _),
        daemon(tmp_path, url if downloads else None, spec, notifications=NOTIFICATIONS) as live,
    ):
        await trio.to_thread.run_sync(
            partial(
                make_user, live.root, REQUESTER, (Role.Regular,), REQUESTER_PASSWORD,
                (Permission.RequestContent,),
            )
        )  # fmt: skip
        base = str(live.http.base_url).rstrip("/")
        token = trio.lowlevel.current_trio_token()
        yield Served(live, knobs, build_catalog(spec), token, base)


def in_browser(body: Callable[[Browser, Served], None]) -> Callable[..., Awaitable[None]]:
    """A test whose body drives the browser from a worker thread while the daemon runs on the
    test's own trio loop (its signal handling needs the main thread)."""

    @functools.wraps(body)
    async def test(browser: Browser, served: Served) -> None:
        await trio.to_thread.run_sync(body, browser, served)

    return test


class Browser:
    """The session's Chromium with the helpers the tests share."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def open(self, url: str, width: int = 1200, height: int = 900) -> None:
        self.driver.set_window_size(width, height)
        self.driver.get(url)
        self.driver.delete_all_cookies()
        self.driver.get(url)
        self.requests()  # forget what earlier tests' pages asked for

    def wait_for(self, condition: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
        try:
            # Live updates redraw the page: an element found a moment ago may be gone; look again.
            waiting = WebDriverWait(
                self.driver, timeout, poll_frequency=0.05,
                ignored_exceptions=[StaleElementReferenceException],
            )  # fmt: skip
            result: T = waiting.until(lambda _: condition())
            return result
        except TimeoutException:
            raise AssertionError(
                f"timed out waiting for {what}; page text:\n{self.text('main')}"
            ) from None

    def find(self, css: str) -> WebElement:
        return self.wait_for(lambda: self.visible(css), f"{css} to show")

    def visible(self, css: str) -> WebElement | None:
        for element in self.driver.find_elements(By.CSS_SELECTOR, css):
            if element.is_displayed():
                return element
        return None

    def text(self, css: str) -> str:
        script = "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText)"
        texts: list[str] = self.driver.execute_script(script, css)
        return "\n".join(texts)

    def wait_text(self, css: str, words: str, timeout: float = WAIT_S) -> None:
        self.wait_for(lambda: words in self.text(css), f"{words!r} in {css}", timeout)

    def button(self, label: str, within: str = "main") -> WebElement:
        """The visible, enabled button whose text or accessible label is `label`."""

        def found() -> WebElement | None:
            for scope in self.driver.find_elements(By.CSS_SELECTOR, within):
                for b in scope.find_elements(By.TAG_NAME, "button"):
                    named = label in (b.text, b.get_attribute("aria-label"))
                    if named and b.is_displayed() and b.is_enabled():
                        return b
            return None

        return self.wait_for(found, f"button {label!r} in {within}")

    def click(self, label: str, within: str = "main") -> None:
        """Click the button (found again if a live redraw replaced it before the click)."""

        def clicked() -> bool:
            self.button(label, within).click()
            return True

        self.wait_for(clicked, f"a click on {label!r}")

    def sign_in(self, handle: str, password: str) -> None:
        self.find("#user-handle").send_keys(handle)
        self.find("#password").send_keys(password)
        self.click("Sign in")
        self.find("#sign-out")

    def go(self, hash_route: str) -> None:
        self.driver.execute_script("location.hash = arguments[0]", hash_route)

    def fetch(self, method: str, path: str, body: Any = None) -> Any:
        """An API call made by the page, as the user signed in there (its session cookie)."""
        script = """
            const [method, path, body, done] = arguments;
            const options = { method, credentials: "same-origin", headers: {} };
            if (body !== null) {
                options.headers["Content-Type"] = "application/json";
                options.body = JSON.stringify(body);
            }
            fetch(path, options)
                .then(async (r) => done({ status: r.status, body: await r.json() }))
                .catch((e) => done({ status: 0, body: String(e) }));
        """
        answer: dict[str, Any] = self.driver.execute_async_script(script, method, path, body)
        assert 0 < answer["status"] < 400, answer
        return answer["body"]

    def requests(self) -> list[str]:
        """URLs the browser requested since the last call (from Chrome's performance log)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def overflow(self) -> int:
        """How many CSS pixels the page is wider than the viewport (0: no sideways scroll)."""
        width: int = self.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        return width

    def console_errors(self) -> list[str]:
        """Script errors (answers with an error status are the API's, shown on the page)."""
        logged = self.driver.get_log("browser")
        return [
            e["message"] for e in logged
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
        ]  # fmt: skip


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "chromium")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--no-first-run", "--disable-extensions", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = webdriver.ChromeService(executable_path=_first(CHROMEDRIVER, "chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: Any) -> Browser:
    return Browser(chromium)


__all__ = [
    "ADMIN", "ADMIN_PASSWORD", "REQUESTER", "REQUESTER_PASSWORD", "Browser", "Served", "in_browser",
]  # fmt: skip
