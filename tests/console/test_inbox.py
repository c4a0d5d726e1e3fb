"""The inbox and notifications in a real browser (SPEC §16, §17): a request's ending counted live
in the navigation and listed in the inbox, marked read one at a time or all at once, linked to
its request; a user's notification URLs refused in words, saved masked and tested; the admins'
notification failures; and no inbox on a server without the download manager."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.console.conftest import (
    ADMIN,
    ADMIN_PASSWORD,
    REQUESTER,
    REQUESTER_PASSWORD,
    Browser,
    Served,
    in_browser,
)
from tests.support.receiver import receiver

pytestmark = pytest.mark.process
SECRET = "s3cr3t-t0ken-XYZ"


def unread(browser: Browser) -> int:
    """The unread count the navigation shows (0 when it shows none)."""
    script = """
        const badge = document.getElementById("inbox-count");
        return badge && badge.offsetParent !== null ? Number(badge.textContent) : 0;
    """
    count: int = browser.driver.execute_script(script)
    return count


def items(browser: Browser) -> list[dict[str, str]]:
    """The inbox's items as shown, top to bottom."""
    script = """
        return [...document.querySelectorAll("#inbox-items li.inbox-item")].map((li) => ({
            id: li.dataset.id, read: li.dataset.read, title: li.querySelector("h3").textContent,
            text: li.innerText,
        }));
    """
    shown: list[dict[str, str]] = browser.driver.execute_script(script)
    return shown


def request(browser: Browser, served: Served, index: int) -> str:
    """The signed-in user requests the fake's album `index`; its request id."""
    album_id, album, artist = served.album(index)
    body = {"album_id": album_id, "album_name": album, "artist_name": artist}
    request_id: str = browser.fetch("POST", "/v1/download/request/album", body)["request_id"]
    return request_id


def focused_request(browser: Browser) -> str | None:
    """The id of the request My requests marks, if it has the keyboard focus."""
    script = """
        const chosen = document.querySelector("#my-requests li.chosen");
        return chosen && document.activeElement === chosen ? chosen.dataset.id : null;
    """
    found: str | None = browser.driver.execute_script(script)
    return found


@in_browser
def test_a_finished_request_is_counted_live_listed_and_marked_read(
    browser: Browser, served: Served
) -> None:
    _, album, _ = served.album(1)
    failing_id, failing, _ = served.album(4)
    served.knobs.not_found_ids = {failing_id}
    browser.open(served.url)
    browser.sign_in(REQUESTER, REQUESTER_PASSWORD)
    assert "Inbox" in browser.text("nav")
    assert "Notification failures" not in browser.text("nav")  # the admins' page
    assert unread(browser) == 0
    browser.driver.execute_script("window.notReloaded = true")
    request(browser, served, 1)
    browser.wait_for(lambda: unread(browser) == 1, "the unread count to rise live")
    failed = request(browser, served, 4)
    browser.wait_for(lambda: unread(browser) == 2, "the count to rise again")
    assert browser.driver.execute_script("return window.notReloaded") is True

    browser.driver.find_element(By.CSS_SELECTOR, 'nav a[href="#/inbox"]').click()
    browser.wait_for(lambda: len(items(browser)) == 2, "both endings in the inbox")
    newest, oldest = items(browser)
    assert (newest["title"], oldest["title"]) == ("Download failed", "Download complete")
    assert failing in newest["text"]
    assert album in oldest["text"]
    assert "unread" in oldest["text"]
    assert newest["read"] == oldest["read"] == "false"
    browser.wait_text("#inbox-summary", "2 unread")

    browser.click("Mark read", within=f'#inbox-items li[data-id="{oldest["id"]}"]')
    browser.wait_text("#inbox-outcome", "Marked read: Download complete.")
    browser.wait_for(lambda: unread(browser) == 1, "the count to drop")
    browser.wait_for(lambda: items(browser)[1]["read"] == "true", "the item shown read")
    focused = browser.driver.execute_script("return document.activeElement.dataset.id")
    assert focused == oldest["id"]  # the keyboard stays on the item, its button gone
    assert "unread" not in items(browser)[1]["text"]

    # The failed one leads to its request in My requests, marked and focused.
    link = f'#inbox-items li[data-id="{newest["id"]}"] a.to-request'
    browser.find(link).click()
    browser.wait_for(lambda: focused_request(browser) == failed, "the request from the inbox")
    assert "The downloader does not have this album" in browser.text("#my-requests li.chosen")

    browser.go("#/inbox")
    browser.click("Mark all read")
    browser.wait_text("#inbox-outcome", "Marked 1 item read.")
    browser.wait_for(lambda: unread(browser) == 0, "no count left")
    browser.wait_text("#inbox-summary", "Everything is read.")
    assert [i["read"] for i in items(browser)] == ["true", "true"]
    assert not browser.console_errors()


def saved(browser: Browser) -> list[str]:
    return browser.text("#notify-saved li").splitlines()


def set_urls(browser: Browser, *urls: str) -> None:
    field = browser.find("#notify-urls")
    field.clear()
    field.send_keys("\n".join(urls))
    browser.click("Save")


@in_browser
def test_notification_urls_are_refused_in_words_saved_masked_and_tested(
    browser: Browser, served: Served
) -> None:
    with receiver() as target:
        browser.open(served.url)
        browser.sign_in(REQUESTER, REQUESTER_PASSWORD)
        browser.go("#/inbox")
        browser.find("#notify-urls")
        assert saved(browser) == ["None: only this inbox tells you."]

        # Loopback by its address is not allowed (only "localhost" is): refused, with why.
        set_urls(browser, "json://127.0.0.1:8080/hook")
        browser.wait_text(
            "#notify-status",
            "Not saved: json://127.0.0.1:8080/hook: its host is not on the public internet. "
            "Nothing changed.",
        )
        set_urls(browser, "http://example.org/hook")
        browser.wait_text("#notify-status", "the scheme must be one of ntfys, discord")
        assert saved(browser) == ["None: only this inbox tells you."]

        # Two allowed URLs, told of completions only: saved, the secret masked.
        good = target.url(SECRET).replace("127.0.0.1", "localhost")
        browser.find('#notify-form input[value="request.failed"]').click()
        set_urls(browser, good, "json://localhost:9/dead")
        browser.wait_text("#notify-status", "Saved 2 URLs: told when a request of mine completed.")
        browser.driver.refresh()  # what the server kept, not what the page remembers
        browser.find("#notify-urls")
        assert saved(browser) == [
            f"json://user:****@localhost:{target.port}/hook", "json://localhost:9/dead",
        ]  # fmt: skip
        failed_box = browser.find('#notify-form input[value="request.failed"]')
        assert not failed_box.is_selected()
        assert SECRET not in browser.driver.page_source

        browser.click("Send a test")
        browser.wait_text("#notify-status", "Test sent: 1 of 2 URLs took it.")
        results = browser.text("#notify-results li").splitlines()
        assert results[0] == f"json://user:****@localhost:{target.port}/hook: delivered"
        assert results[1].startswith("json://localhost:9/dead: not delivered — ")
        assert target.titles() == ["Pezzottify test notification"]

        # An empty save would drop URLs the page cannot send back: it says so and keeps them.
        set_urls(browser)
        browser.wait_text("#notify-status", "Not saved: enter every URL to keep")
        browser.click("Remove all URLs")
        browser.wait_text("#notify-status", 'Press "Remove all URLs" again')
        assert len(saved(browser)) == 2
        browser.click("Remove all URLs")
        browser.wait_text("#notify-status", "Removed every URL")
        assert saved(browser) == ["None: only this inbox tells you."]
        assert not browser.console_errors()


def dead_target_fails(served: Served, browser: Browser) -> dict[str, Any]:
    """The admin aims their notifications at a port nothing listens on and requests an album:
    its notification is recorded failed (one attempt); that record."""
    dead = f"json://user:{SECRET}@localhost:9/dead"
    served.api("PUT", "/v1/user/notifications", json={"urls": [dead]})
    album_id, album, artist = served.album(2)
    body = {"album_id": album_id, "album_name": album, "artist_name": artist}
    served.api("POST", "/v1/download/request/album", json=body)
    failed = browser.wait_for(
        lambda: served.api("GET", "/v1/admin/notifications/failed")["items"],
        "the notification to be recorded failed",
    )
    record: dict[str, Any] = failed[0]
    return record


@in_browser
def test_an_admin_reads_the_notification_failures(browser: Browser, served: Served) -> None:
    record = dead_target_fails(served, browser)
    browser.open(served.url)
    browser.sign_in(ADMIN, ADMIN_PASSWORD)
    browser.driver.find_element(By.LINK_TEXT, "Notification failures").click()
    browser.wait_text("#notify-failures-total", "1 failed notification")
    text = browser.text("#notify-failures li.failed-notice")
    assert "Download complete" in text
    assert f"for {ADMIN}" in text
    assert "1 attempt" in text
    assert "Last error: json://user:****@localhost:9/dead: " in text
    assert record["request_id"] in text
    assert SECRET not in browser.driver.page_source


@pytest.mark.parametrize("served", [{"downloads": False}], indirect=True)
@in_browser
def test_without_the_download_manager_there_is_no_inbox(browser: Browser, served: Served) -> None:
    browser.open(served.url)
    browser.sign_in(ADMIN, ADMIN_PASSWORD)
    browser.find('nav a[href="#/home"]')
    assert "Inbox" not in browser.text("nav")
    assert "Notification failures" not in browser.text("nav")
    for hidden in ("#/inbox", "#/admin/notifications"):
        browser.go(hidden)
        browser.wait_for(
            lambda route=hidden: browser.driver.execute_script("return location.hash") != route,
            f"{hidden} to lead elsewhere",
        )
