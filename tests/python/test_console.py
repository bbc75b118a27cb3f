"""The web console (SPEC §10) in a real browser: Debian's ``chromium``,
headless, driven through ``chromedriver`` by ``selenium``, against the real
binary and a mock OpenAI upstream.

The browser comes from ``./dev deps`` (apt: chromium, chromium-driver).
Without it these tests skip with a warning, except where
``TOLLGATE_BROWSER=required`` (``./dev`` sets it in CI): there they fail.
A failing test leaves a screenshot, the page's HTML and the browser's
console log in ``target/test-artifacts/console/``. With
``TOLLGATE_SCREENSHOTS=DIR`` the tests also save the README's screenshots
in DIR (``scripts/console-screenshots.sh``).
"""

from __future__ import annotations

import base64
import csv
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Iterator

import pytest

from conftest import StartTollgate
from harness import REPO, Tollgate, remember_secret, sha256_hex
from mock_openai import MockOpenAI

CHROMIUM = Path(os.environ.get("TOLLGATE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("TOLLGATE_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = REPO / "target" / "test-artifacts" / "console"
SHOTS = os.environ.get("TOLLGATE_SCREENSHOTS")
# Generous: a cold chromium on a loaded CI machine has taken over 10 s to
# render the first page; a passing run never waits this long.
WAIT = 30

CHANNEL_KEY = "sk-console-upstream"
ADMIN_TOKEN = "console-admin-token"
ALICE_TOKEN = "ut-console-alice"
ALICE_KEY = "sk-console-alice-toml"
BOB_KEY = "sk-console-bob-toml"


def console_config(base_url: str) -> str:
    """Two groups (``cheap`` at ratio 0.5, selectable) on one mock OpenAI
    upstream, and an in-process mock channel for a second model; alice (a
    user token, a key of the file in ``cheap``) and bob (a key). The first
    line belongs to the harness's ``[server]`` table."""
    return f"""admin_token = "{ADMIN_TOKEN}"

[[groups]]
name = "default"
ratio = 1.0
description = "Every channel, list price"
connectivity = "good"

[[groups]]
name = "cheap"
ratio = 0.5
description = "Half price"
connectivity = "acceptable"
selectable = true

[[models]]
name = "gpt-4o-mini"
input = 0.15
output = 0.6
cached_input = 0.075

[[models]]
name = "claude-sonnet-4-6"
input = 3
output = 15
cached_input = 0.3
cache_write = 3.75

[[channels]]
name = "mock-openai"
type = "openai"
base_url = "{base_url}"
api_key = "{CHANNEL_KEY}"
groups = ["default", "cheap"]
models = ["gpt-4o-mini"]

[[channels]]
name = "in-process"
type = "mock"
groups = ["default"]
models = ["claude-sonnet-4-6"]

[[users]]
name = "alice"
token_sha256 = "{sha256_hex(ALICE_TOKEN)}"

[[users]]
name = "bob"

[[keys]]
name = "alice-toml"
user = "alice"
groups = ["cheap"]
key_sha256 = "{sha256_hex(ALICE_KEY)}"

[[keys]]
name = "bob-key"
user = "bob"
key_sha256 = "{sha256_hex(BOB_KEY)}"
"""


def _missing_browser() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (tests/python/requirements.txt)")
    return ", ".join(missing) or None


@pytest.fixture(scope="module")
def driver() -> Iterator["object"]:
    missing = _missing_browser()
    if missing:
        reason = f"no browser for the console tests: missing {missing} (`./dev deps` installs them)"
        if os.environ.get("TOLLGATE_BROWSER") == "required":
            pytest.fail(reason)
        print(f"\n*** WARNING: {reason}: SKIPPING THE BROWSER TESTS ***", file=sys.stderr)
        warnings.warn(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--hide-scrollbars", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    downloads = tempfile.TemporaryDirectory(prefix="tollgate-console-downloads-")
    options.add_experimental_option("prefs", {"download.default_directory": downloads.name,
                                              "download.prompt_for_download": False})
    d = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    d.downloads = Path(downloads.name)
    yield d
    d.quit()
    downloads.cleanup()


@pytest.fixture(autouse=True)
def artifacts_on_failure(request: pytest.FixtureRequest, driver) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = request.node.name
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    (ARTIFACTS / f"{name}.html").write_text(driver.page_source)
    (ARTIFACTS / f"{name}.log").write_text(json.dumps(driver.get_log("browser"), indent=1))


def screenshot(driver, name: str) -> None:
    """Saves a README screenshot when TOLLGATE_SCREENSHOTS names a directory."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        # The whole page, at most 1800 px high.
        height = min(1800, driver.execute_script("return document.documentElement.scrollHeight"))
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1},
        })
        (Path(SHOTS) / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def wait_until(driver, condition, message: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(condition, message)


def wait_ready(driver) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.ready === '1'")
    )


def wait_for(driver, css: str, text: str | None = None):
    """The first element matching ``css`` (whose text contains ``text``)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d):
        for el in d.find_elements(By.CSS_SELECTOR, css):
            if el.is_displayed() and (text is None or text in el.text):
                return el
        return False

    return WebDriverWait(driver, WAIT).until(found, f"no visible {css} with {text!r}")


def by_css(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def no_script_errors(driver) -> list[str]:
    """The browser's console errors, but for refused API calls (a 401
    before sign-in is the page asking whether it is signed in)."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]


@pytest.fixture(scope="module")
def gateway(start_tollgate_module: StartTollgate) -> Iterator[tuple[Tollgate, MockOpenAI]]:
    mock = MockOpenAI().start()
    try:
        yield start_tollgate_module(console_config(mock.base_url)), mock
    finally:
        mock.stop()


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_ready(driver)


def pricing_row(driver, group: str, model: str) -> list[str]:
    row = wait_for(driver, f'[data-group="{group}"] tr[data-model="{model}"]')
    return [td.text for td in row.find_elements("css selector", "td")]


def test_pricing_page_shows_each_groups_ratio_and_effective_prices(driver, gateway):
    tollgate, _ = gateway
    open_page(driver, tollgate.url("/"))
    cheap = wait_for(driver, '[data-group="cheap"] .group-head')
    assert "ratio ×0.5" in cheap.text
    assert "acceptable" in cheap.text and "Half price" in cheap.text and "selectable" in cheap.text
    default = wait_for(driver, '[data-group="default"] .group-head').text
    assert "ratio ×1" in default and "selectable" not in default
    # model, then input, output, cached input, cache write: base → effective.
    assert pricing_row(driver, "cheap", "gpt-4o-mini") == [
        "gpt-4o-mini", "$0.15 → $0.075", "$0.6 → $0.3", "$0.075 → $0.0375", "$0.15 → $0.075",
    ]
    assert pricing_row(driver, "default", "claude-sonnet-4-6") == [
        "claude-sonnet-4-6", "$3 → $3", "$15 → $15", "$0.3 → $0.3", "$3.75 → $3.75",
    ]
    # `cheap` has no channel for claude-sonnet-4-6: not listed there.
    assert not by_css(driver, '[data-group="cheap"] tr[data-model="claude-sonnet-4-6"]')
    assert no_script_errors(driver) == []
    screenshot(driver, "console-pricing")


def test_the_model_search_box_filters_rows_and_groups(driver, gateway):
    tollgate, _ = gateway
    open_page(driver, tollgate.url("/"))
    search = wait_for(driver, "#model-search")
    search.send_keys("sonnet")
    wait_for(driver, '[data-group="default"] tr[data-model="claude-sonnet-4-6"]')
    assert not by_css(driver, 'tr[data-model="gpt-4o-mini"]')
    # A group without a match is hidden.
    assert not by_css(driver, '[data-group="cheap"]')[0].is_displayed()
    search.clear()
    search.send_keys("no-such-model")
    assert not any(g.is_displayed() for g in by_css(driver, ".group"))


def test_first_request_snippets_use_this_gateways_url(driver, gateway):
    tollgate, _ = gateway
    open_page(driver, tollgate.url("/"))
    wait_for(driver, "#nav-start").click()
    base = tollgate.url("")
    snippet = wait_for(driver, "#snippet")
    assert f"curl {base}/v1/chat/completions" in snippet.text
    tabs = {b.text: b for b in by_css(driver, "#snippet-tabs button")}
    assert list(tabs) == ["curl", "Python openai", "Python anthropic", "Claude Code", "Codex CLI", "Gemini CLI"]
    expected = {
        "Python openai": f'OpenAI(base_url="{base}/v1"',
        "Python anthropic": f'Anthropic(base_url="{base}"',
        "Claude Code": f"export ANTHROPIC_BASE_URL={base}",
        "Codex CLI": f'base_url = "{base}/v1"',
        "Gemini CLI": f"export GOOGLE_GEMINI_BASE_URL={base}",
    }
    for name, text in expected.items():
        tabs[name].click()
        assert text in wait_for(driver, "#snippet").text, name
    tabs["Codex CLI"].click()
    codex = wait_for(driver, "#snippet").text
    assert 'wire_api = "responses"' in codex and 'env_key = "TOLLGATE_API_KEY"' in codex
    # The model picked is the one the snippets ask for.
    tabs["curl"].click()
    assert '"model": "claude-sonnet-4-6"' in wait_for(driver, "#snippet").text


def sign_in(driver, tollgate: Tollgate, token: str) -> None:
    open_page(driver, tollgate.url("/"))
    wait_for(driver, "#signin-token").send_keys(token)
    wait_for(driver, "#signin-button").click()
    wait_for(driver, "#who", "Signed in as alice")


def nano_cost(prompt: int, cached: int, completion: int, ratio: str) -> int:
    """gpt-4o-mini's exact cost in nano-USD, rounded half to even."""
    usd_per_m = (Decimal(prompt - cached) * Decimal("0.15") + Decimal(cached) * Decimal("0.075")
                 + Decimal(completion) * Decimal("0.6"))
    return int((usd_per_m * Decimal(ratio) * 1000).to_integral_value(ROUND_HALF_EVEN))


def admin_call(tollgate: Tollgate, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(tollgate.admin_url(path), method=method,
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def test_sign_in_see_usage_by_group_download_it_and_sign_out(driver, gateway):
    import openai

    tollgate, _ = gateway
    client = openai.OpenAI(base_url=tollgate.url("/v1"), api_key=ALICE_KEY, max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}])
    assert reply.choices[0].message.content == "echo: hi there"
    u = reply.usage
    cost = nano_cost(u.prompt_tokens, u.prompt_tokens_details.cached_tokens, u.completion_tokens, "0.5")

    sign_in(driver, tollgate, ALICE_TOKEN)
    # The groups she may pick, in order: her own (default), then the selectable one.
    assert [c.text for c in by_css(driver, "#group-choices .chip")] == ["default", "cheap"]
    # Neither the token nor the session are within the page's reach.
    assert ALICE_TOKEN not in driver.current_url
    stored = driver.execute_script(
        "return JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie")
    assert ALICE_TOKEN not in stored and "tollgate_session" not in stored
    cookie = driver.get_cookie("tollgate_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

    wait_for(driver, "#nav-usage").click()
    wait_for(driver, '#usage-by [data-by="group"]').click()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    line = wait_for(driver, "#usage-table tbody tr", "cheap")
    cells = [td.text for td in line.find_elements("css selector", "td")]
    assert cells[:3] == [today, "cheap", "1"]
    shown = float(cells[6].removeprefix("$"))
    assert abs(shown - cost / 1e9) <= cost / 1e9 * 0.005, cells[6]
    assert by_css(driver, "#usage-spend svg rect")
    assert "spend (USD)" in wait_for(driver, "#usage-spend").text
    screenshot(driver, "console-usage")
    # The CSV, made in the page from the same rows: exact nano-USD.
    wait_for(driver, "#usage-csv").click()
    csv_file = driver.downloads / f"tollgate-usage-{today}.csv"
    wait_until(driver, lambda d: csv_file.exists() and csv_file.stat().st_size > 0, "no CSV")
    rows = list(csv.DictReader(csv_file.open()))
    assert [(r["day"], r["key"], r["model"], r["group"], r["requests"], r["cost_nano_usd"])
            for r in rows] == [(today, "alice-toml", "gpt-4o-mini", "cheap", "1", str(cost))]

    wait_for(driver, "#signout").click()
    wait_for(driver, "#signin-token")
    assert not any(b.is_displayed() for b in by_css(driver, "#nav-keys, #nav-usage"))
    assert driver.get_cookie("tollgate_session") is None
    driver.refresh()
    wait_ready(driver)
    wait_for(driver, "#signin-token")
    assert no_script_errors(driver) == []


def test_a_session_that_ends_returns_the_page_to_sign_in(driver, gateway):
    tollgate, _ = gateway
    sign_in(driver, tollgate, ALICE_TOKEN)
    # As if it had expired: the next call is refused, and the page says so.
    driver.delete_cookie("tollgate_session")
    wait_for(driver, "#nav-usage").click()
    wait_for(driver, "#signin-token")
    assert not any(b.is_displayed() for b in by_css(driver, "#nav-keys, #nav-usage, #signout"))
    assert wait_for(driver, "#nav-pricing").get_attribute("class") == "active"


def test_a_wrong_token_is_refused_in_the_page(driver, gateway):
    tollgate, _ = gateway
    open_page(driver, tollgate.url("/"))
    wait_for(driver, "#signin-token").send_keys("not-a-user-token")
    wait_for(driver, "#signin-button").click()
    assert "Sign-in failed: invalid user token" in wait_for(driver, "#signin-error").text
    assert not any(b.is_displayed() for b in by_css(driver, "#nav-keys"))


def test_the_admin_view_lists_channels_spend_and_the_last_reload_error(driver, gateway):
    import openai

    tollgate, _ = gateway
    client = openai.OpenAI(base_url=tollgate.url("/v1"), api_key=BOB_KEY, max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    open_page(driver, tollgate.admin_url("/"))
    wait_for(driver, "#signin-token").send_keys(ADMIN_TOKEN)
    wait_for(driver, "#signin-button").click()
    row = wait_for(driver, "#channels tbody tr", "mock-openai")
    cells = [td.text for td in row.find_elements("css selector", "td")]
    channels = admin_call(tollgate, "/admin/channels")["channels"]
    attempts = next(c for c in channels if c["name"] == "mock-openai")["requests_last_hour"]
    assert attempts >= 2
    assert cells[:7] == ["mock-openai", "openai", "up", "—", str(attempts), "0", "0.0 %"]
    assert "in-process" in wait_for(driver, "#channels").text
    # Spend by group: bars, a USD axis, the group in the legend.
    chart = wait_for(driver, "#spend-chart")
    assert by_css(driver, "#spend-chart svg rect")
    assert "spend (USD)" in chart.text and "default" in chart.text
    assert "Spend per hour by group" in chart.text and "hour (UTC)" in chart.text
    wait_for(driver, '#spend-range [data-range="30d"]').click()
    chart = wait_for(driver, "#spend-chart", "Spend per day by group")
    assert "day (UTC)" in chart.text and by_css(driver, "#spend-chart svg rect")
    wait_for(driver, '#spend-range [data-range="48h"]').click()
    wait_for(driver, "#spend-chart", "Spend per hour by group")
    assert "bob-key" in wait_for(driver, "#top-keys").text
    assert "bob" in wait_for(driver, "#top-users").text
    assert "bob-key" in wait_for(driver, "#recent").text
    assert "config generation 1" in wait_for(driver, "#config-line").text
    cookie = driver.get_cookie("tollgate_admin")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    screenshot(driver, "console-admin")

    # A refused reload shows, and goes once the file loads again.
    text = tollgate.config_path.read_text()
    try:
        tollgate.config_path.write_text(text.replace("ratio = 0.5", 'ratio = "half"'))
        with pytest.raises(urllib.error.HTTPError):
            admin_call(tollgate, "/admin/reload", "POST")
        wait_for(driver, "#refresh").click()
        assert "is not a decimal number" in wait_for(driver, "#reload-error-text").text
    finally:
        tollgate.config_path.write_text(text)
        admin_call(tollgate, "/admin/reload", "POST")
    wait_for(driver, "#refresh").click()
    wait_until(driver, lambda d: not by_css(d, "#reload-error-text"), "the reload error stayed")
    wait_for(driver, "#signout").click()
    wait_for(driver, "#signin-token")
    assert no_script_errors(driver) == []


def test_without_an_admin_token_the_admin_view_is_open(driver, start_tollgate: StartTollgate):
    mock = MockOpenAI().start()
    try:
        config = console_config(mock.base_url).replace(f'admin_token = "{ADMIN_TOKEN}"', "")
        tollgate = start_tollgate(config)
        open_page(driver, tollgate.admin_url("/"))
        assert "mock-openai" in wait_for(driver, "#channels").text
        assert not any(e.is_displayed() for e in by_css(driver, "#signin, #signout"))
        assert "No spend yet." in wait_for(driver, "#top-keys").text
        assert no_script_errors(driver) == []
    finally:
        mock.stop()


def test_create_a_key_in_a_chosen_group_use_it_edit_it_revoke_it(driver, gateway):
    import openai

    tollgate, _ = gateway
    sign_in(driver, tollgate, ALICE_TOKEN)
    # Her key from the file is listed, read-only.
    toml_row = wait_for(driver, 'tr[data-key="alice-toml"]')
    assert "from the config file" in toml_row.text
    assert not toml_row.find_elements("css selector", "button")
    wait_for(driver, '#group-choices [data-group="cheap"]').click()
    assert [li.text for li in by_css(driver, "#group-order li")] == ["cheap"]
    wait_for(driver, "#key-name").send_keys("laptop")
    wait_for(driver, "#create-key-button").click()
    secret = wait_for(driver, "#secret-value").text
    remember_secret(secret)
    assert secret.startswith("sk-") and len(secret) >= 32
    row = wait_for(driver, 'tr[data-key="laptop"]')
    assert "cheap" in row.text and "…" + secret[-4:] in row.text
    screenshot(driver, "console-keys")
    # The secret is in the page only: not in the URL, not in storage.
    assert secret not in driver.current_url
    stored = driver.execute_script("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert secret not in stored
    wait_for(driver, "#secret-copy").click()
    assert wait_for(driver, "#secret-copy").text in ("Copied", "Selected: press Ctrl+C")
    wait_for(driver, "#secret-dismiss").click()
    assert not by_css(driver, "#secret-value")
    assert secret not in driver.page_source

    # The secret works with the openai SDK and is billed to `cheap` (ratio 0.5).
    client = openai.OpenAI(base_url=tollgate.url("/v1"), api_key=secret, max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello world"}])
    assert reply.choices[0].message.content == "echo: hello world"
    u = reply.usage
    usage = admin_call(tollgate, "/admin/usage?key=laptop&group_by=group")
    assert [(r["group"], r["requests"], r["cost_nano_usd"]) for r in usage["rows"]] == [
        ("cheap", 1, nano_cost(u.prompt_tokens, u.prompt_tokens_details.cached_tokens,
                               u.completion_tokens, "0.5")),
    ]

    # Edit its limits in place.
    wait_for(driver, 'tr[data-key="laptop"] [data-action="edit"]').click()
    form = wait_for(driver, 'form[data-edit="laptop"]')
    rpm = form.find_element("css selector", 'input[name="rpm"]')
    rpm.clear()
    rpm.send_keys("7")
    form.find_element("css selector", 'button[type="submit"]').click()
    assert "7 rpm" in wait_for(driver, 'tr[data-key="laptop"]', "7 rpm").text

    # Revoke (asks once more): the key stops working at once.
    wait_for(driver, 'tr[data-key="laptop"] [data-action="revoke"]').click()
    wait_for(driver, 'tr[data-key="laptop"] [data-action="revoke"]', "Really").click()
    wait_until(driver, lambda d: not by_css(d, 'tr[data-key="laptop"]'), "the key stayed listed")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    wait_for(driver, "#signout").click()
    wait_for(driver, "#signin-token")
    assert no_script_errors(driver) == []


def test_a_group_she_may_no_longer_pick_is_marked_inactive(driver, start_tollgate: StartTollgate):
    mock = MockOpenAI().start()
    try:
        tollgate = start_tollgate(console_config(mock.base_url))
        body = json.dumps({"name": "two", "groups": ["cheap", "default"]}).encode()
        req = urllib.request.Request(tollgate.url("/api/keys"), data=body, method="POST", headers={
            "Authorization": f"Bearer {ALICE_TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            remember_secret(json.load(r)["key"])
        # The operator makes `cheap` no longer selectable: her key keeps it, inactive.
        text = tollgate.config_path.read_text()
        aside = tollgate.config_path.with_suffix(".tmp")
        aside.write_text(text.replace("selectable = true", "selectable = false"))
        aside.replace(tollgate.config_path)
        assert admin_call(tollgate, "/admin/reload", "POST")
        sign_in(driver, tollgate, ALICE_TOKEN)
        row = wait_for(driver, 'tr[data-key="two"]', "cheap (inactive) → default")
        # The key from the file names `cheap` too, but the file owns it: never inactive.
        assert "(inactive)" not in wait_for(driver, 'tr[data-key="alice-toml"]').text
        assert "two" in row.text and no_script_errors(driver) == []
    finally:
        mock.stop()
