"""The web console in a real browser: sign-in, a request followed live to completion, a cancel,
an admin's pause, resume and retry, and every page at 360 px wide without sideways scrolling
(the inbox and notifications have their own file, test_inbox.py)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.keys import Keys

from tests.console.conftest import (
    ADMIN,
    ADMIN_PASSWORD,
    REQUESTER,
    REQUESTER_PASSWORD,
    Browser,
    Served,
    in_browser,
)

pytestmark = pytest.mark.process


def card(browser: Browser, css: str, name: str) -> str:
    """The text of the card under `css` whose heading names `name` ('' if none)."""
    script = """
        const [css, name] = arguments;
        const found = [...document.querySelectorAll(css)].find(
            (c) => c.querySelector('h3') && c.querySelector('h3').textContent === name);
        return found ? found.dataset.status + '\\n' + found.innerText : '';
    """
    text: str = browser.driver.execute_script(script, css, name)
    return text


def wait_card(browser: Browser, css: str, name: str, words: str, timeout: float = 20) -> None:
    def shown() -> bool:
        text = card(browser, css, name)
        return bool(text) and words in text

    browser.wait_for(shown, f"{words!r} on {name}", timeout)


def card_button(browser: Browser, css: str, name: str, label: str) -> None:
    browser.click(f"{label} {name}", within=css)


def only_own_origin(browser: Browser, served: Served) -> None:
    origin = urlsplit(served.url).netloc
    foreign = [u for u in browser.requests() if urlsplit(u).scheme in ("http", "https", "ws")]
    foreign = [u for u in foreign if urlsplit(u).netloc != origin]
    assert not foreign, f"the console reached beyond the daemon: {foreign}"


@in_browser
def test_sign_in_with_a_wrong_then_the_right_password_and_sign_out(
    browser: Browser, served: Served
) -> None:
    browser.open(served.url)
    browser.find("#user-handle").send_keys(REQUESTER)
    browser.find("#password").send_keys("not-the-password" + Keys.ENTER)
    browser.wait_text("#signin-status", "wrong user handle or password")
    browser.find("#password").clear()
    browser.find("#password").send_keys(REQUESTER_PASSWORD + Keys.ENTER)
    browser.find("#sign-out")
    assert "My requests" in browser.text("nav")
    assert "Queue" not in browser.text("nav")  # a requester sees no admin page
    browser.click("Sign out", within="header")
    browser.find("#user-handle")
    browser.driver.refresh()  # the session really ended: a reload asks to sign in again
    browser.find("#user-handle")
    only_own_origin(browser, served)
    assert not browser.console_errors()


@in_browser
def test_a_request_is_followed_to_completion_without_reloading(
    browser: Browser, served: Served
) -> None:
    album_id, album, _artist = served.album(1)
    browser.open(served.url)
    browser.sign_in(REQUESTER, REQUESTER_PASSWORD)
    browser.go("#/search")
    browser.find("#search-q").send_keys(album + Keys.ENTER)
    wait_card(browser, "#results li", album, "")
    card_button(browser, "#results", album, "Request")
    browser.wait_for(
        lambda: "Requested: position" in card(browser, "#results li", album), "the outcome"
    )
    browser.wait_text("#limit-today", "1 of")  # the limits follow the request live
    browser.go("#/requests")
    browser.find("#my-requests li.request")
    browser.driver.execute_script("window.notReloaded = true")
    wait_card(browser, "#my-requests li", album, "COMPLETED")
    assert browser.driver.execute_script("return window.notReloaded") is True
    assert "6 of 6 files done" in card(browser, "#my-requests li", album)  # 4 tracks, 2 images
    # The completed album opens in the catalog, its tracks ready to play.
    browser.driver.find_element("link text", album).click()
    browser.wait_text("main h1", album)
    browser.button("Play", within=".tracks")
    only_own_origin(browser, served)
    assert served.api("GET", f"/v1/content/album/{album_id}")["name"] == album


def press(browser: Browser, *keys: str) -> None:
    browser.driver.switch_to.active_element.send_keys(*keys)


def tab_to(browser: Browser, label: str, limit: int = 40) -> None:
    """Press Tab until the focused element is the button labelled `label`."""
    for _ in range(limit):
        focused = browser.driver.switch_to.active_element
        if label in (focused.text, focused.get_attribute("aria-label")):
            return
        press(browser, Keys.TAB)
    raise AssertionError(f"{label!r} is not reachable with Tab")


@in_browser
def test_sign_in_search_and_request_by_keyboard_alone_with_errors_in_words(
    browser: Browser, served: Served
) -> None:
    browser.open(served.url)
    browser.find("#user-handle")
    press(browser, REQUESTER, Keys.TAB, REQUESTER_PASSWORD, Keys.ENTER)
    browser.find("#sign-out")
    _, album, _ = served.album(5)
    taken_id, taken, artist = served.album(6)
    for name, outcome in ((album, "Requested: position"), (taken, "Failed: the album is already")):
        browser.go("#/requests")
        browser.find("#my-requests li")
        browser.go("#/search")
        browser.wait_for(lambda: browser.driver.switch_to.active_element.get_attribute("id")
                         == "search-q", "the search field to take the focus")  # fmt: skip
        press(browser, name, Keys.ENTER)
        wait_card(browser, "#results li", name, "")
        if name == taken:  # someone asks for it first: the click answers 409, said in words
            body = {"album_id": taken_id, "album_name": taken, "artist_name": artist}
            served.api("POST", "/v1/download/request/album", json=body)
        tab_to(browser, f"Request {name}")
        press(browser, Keys.ENTER)
        wait_card(browser, "#results li", name, outcome)


@in_browser
def test_a_request_is_cancelled_mid_album(browser: Browser, served: Served) -> None:
    served.knobs.audio_bytes_per_sec = 2048  # two seconds a file: the album is still running
    _, album, artist = served.album(2)
    browser.open(served.url)
    browser.sign_in(ADMIN, ADMIN_PASSWORD)
    served.api(
        "POST", "/v1/download/request/album",
        json={"album_id": served.album(2)[0], "album_name": album, "artist_name": artist},
    )  # fmt: skip
    browser.go("#/requests")
    wait_card(browser, "#my-requests li", album, "files done")  # its files are being fetched
    card_button(browser, "#my-requests", album, "Cancel")
    wait_card(browser, "#my-requests li", album, "CANCELLED")
    assert "Cancelled." in card(browser, "#my-requests li", album)
    assert "Cancel" not in browser.text("#my-requests button")


@in_browser
def test_an_admin_pauses_resumes_and_retries_a_failed_item(
    browser: Browser, served: Served
) -> None:
    browser.open(served.url)
    browser.sign_in(ADMIN, ADMIN_PASSWORD)
    browser.go("#/admin/queue")
    browser.find("#pause-reason").send_keys("disk swap")
    browser.click("Pause the queue")
    browser.wait_text("#paused-banner", "Paused by admin")
    browser.wait_text("#queue-stats", "nothing new starts")
    album_id, album, artist = served.album(3)
    body = {"album_id": album_id, "album_name": album, "artist_name": artist}
    served.api("POST", "/v1/download/request/album", json=body)
    wait_card(browser, "#queue-items li", album, "an admin paused the queue")
    browser.click("Resume the queue")
    browser.wait_text("#queue-stats", "running again")
    wait_card(browser, "#queue-items li", album, "COMPLETED")
    assert not browser.visible("#paused-banner")

    # An album the downloader does not know fails at once; once it knows it, a retry succeeds.
    failing, name, artist = served.album(4)
    served.knobs.not_found_ids = {failing}
    body = {"album_id": failing, "album_name": name, "artist_name": artist}
    served.api("POST", "/v1/download/request/album", json=body)
    browser.go("#/admin/failed")
    wait_card(browser, "#failed-items li", name, "The downloader does not have this album")
    served.knobs.not_found_ids = set()
    card_button(browser, "#failed-items", name, "Retry")
    browser.wait_text("#failed-outcome", f"Retried {name}: now")
    browser.go("#/admin/queue")
    wait_card(browser, "#queue-items li", name, "COMPLETED")


@in_browser
def test_every_page_fits_a_360_px_phone(browser: Browser, served: Served) -> None:
    album_id, album, artist = served.album(0)
    # A target nothing listens on: the completion lands in the inbox and its delivery fails.
    served.api("PUT", "/v1/user/notifications", json={"urls": ["json://localhost:9/dead"]})
    served.api(
        "POST", "/v1/download/request/album",
        json={"album_id": album_id, "album_name": album, "artist_name": artist},
    )  # fmt: skip
    browser.open(served.url, width=360, height=740)
    assert browser.overflow() == 0, "sign-in"
    browser.sign_in(ADMIN, ADMIN_PASSWORD)
    pages = {
        "#/requests": "#my-requests li",
        f"#/search?q={album}": "#results li",
        "#/admin/queue": "#queue-items li",
        "#/admin/failed": "#failed-total",
        "#/admin/activity": "#activity svg",
        "#/admin/audit": "#audit table",
        "#/admin/jobs": "#jobs li",
        "#/admin/users": "#users li",
        "#/inbox": "#inbox-items li.inbox-item",
        "#/admin/notifications": "#notify-failures li.failed-notice",
        "#/home": "#popular",
        f"#/album/{album_id}": ".tracks li",
    }
    served.call(served.live.wait_idle)
    browser.wait_for(
        lambda: served.api("GET", "/v1/admin/notifications/failed")["items"],
        "the notification to be recorded failed",
    )
    shots = os.environ.get("CONSOLE_SCREENSHOTS")  # a folder: docs/screenshots/ is made so
    for route, ready in pages.items():
        browser.go(route)
        browser.find(ready)
        assert browser.overflow() == 0, f"{route} scrolls sideways at 360 px"
        if shots:
            name = route.strip("#/").split("?")[0].split("/")[-2 if "album/" in route else -1]
            browser.driver.save_screenshot(str(Path(shots) / f"{name}-360.png"))
    assert not browser.console_errors()
