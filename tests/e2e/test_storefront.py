"""The storefront and the API documentation in a real browser: Debian's Chromium
(scripts/ensure-chromium.sh installs it) driven by Playwright, against the whole system
running as real processes behind the gateway."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from devstack import Stack

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
# Headless, and nothing that would reach past this machine (updates, sync, QUIC probes).
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
PHONE = {"width": 390, "height": 844}
# An API answer of 4xx that a page expects (no stock record yet, a wrong password) is
# logged by Chromium as a failed resource, and so is a request cut by the machine's
# network interfaces changing under it (containers starting): anything else on the
# console is a fault.
_NOT_A_FAULT = re.compile(
    r"^Failed to load resource: (the server responded with a status of 4\d\d"
    r"|net::ERR_NETWORK_CHANGED)"
)
# Generous: registration hashes a password with Argon2, slow on a busy CI machine.
expect.set_options(timeout=30_000)

MakePage = Callable[..., Awaitable[Page]]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


@pytest.fixture
async def new_page(browser: Browser, stack: Stack) -> AsyncIterator[MakePage]:
    """`await new_page(phone=True)`: a page in a browser context of its own (its own
    session), failing the test on any console error or uncaught exception."""
    contexts = []
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not _NOT_A_FAULT.match(message.text):
            problems.append(message.text)

    async def make(*, phone: bool = False) -> Page:
        context = await browser.new_context(
            base_url=stack.gateway_url, viewport=PHONE if phone else {"width": 1280, "height": 900}
        )
        contexts.append(context)
        page = await context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
        return page

    yield make
    for context in contexts:
        await context.close()
    assert problems == []


async def open_shop(page: Page, path: str = "/") -> None:
    await page.goto(f"/#{path}")
    ready = page.locator("html[data-ready=true]")
    try:
        await expect(ready).to_have_count(1, timeout=15_000)
    except AssertionError:
        # Once more if the first load was cut short (ERR_NETWORK_CHANGED, above).
        await page.reload()
        await expect(ready).to_have_count(1)


async def assert_every_control_is_labelled(page: Page) -> None:
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button')]
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !(el.textContent || '').trim())
            .map((el) => el.outerHTML)"""
    )
    assert unlabelled == []


async def sign_in(page: Page, email: str, password: str) -> None:
    await open_shop(page, "/login")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name=re.compile("^Sign out"))).to_be_visible()


async def stocked_product(shop: Any, gateway: httpx.AsyncClient, units: int = 50) -> dict[str, Any]:
    """A product of the seeded catalog with `units` on hand."""
    products = (await gateway.get("/api/v1/products", params={"q": "Mechanical Keyboard"})).json()
    product: dict[str, Any] = products["items"][0]
    response = await gateway.put(
        f"/api/v1/inventory/{product['id']}",
        json={"available": units},
        headers=await shop.admin_headers(),
    )
    assert response.status_code == 200, response.text
    return product


class TestCatalog:
    async def test_search_and_a_product_with_its_stock_on_a_phone(
        self, new_page: MakePage, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        product = await stocked_product(shop, gateway, units=37)
        page = await new_page(phone=True)
        await open_shop(page)
        await expect(page.get_by_role("heading", level=1, name="Catalog")).to_be_visible()
        await expect(page.locator("ul.products > li").first).to_be_visible()
        await assert_every_control_is_labelled(page)

        await page.get_by_role("searchbox", name="Search").fill("mechanical keyboard")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Results for “mechanical keyboard”"
        )
        await page.get_by_role("link", name=product["name"]).click()
        await expect(page.get_by_role("heading", level=1, name=product["name"])).to_be_visible()
        await expect(page.locator(".stock")).to_have_text("37 in stock")
        # Nothing wider than the phone: no sideways scrolling.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]

    async def test_filters_and_pages_are_in_the_address(self, new_page: MakePage) -> None:
        page = await new_page()
        await open_shop(page, "/?category=electronics&max_price=100")
        prices = await page.locator("ul.products .price").all_inner_texts()
        assert prices
        assert all(float(re.sub(r"[^0-9.]", "", price)) <= 100 for price in prices)
        await expect(page.get_by_label("Highest price")).to_have_value("100")
        # Twelve a page: the seeded catalog's twenty make two.
        await open_shop(page)
        await page.get_by_role("link", name="Next page").click()
        await expect(page.get_by_role("status")).to_contain_text(re.compile(r"Showing 13\W"))
        await page.get_by_role("link", name="Previous page").click()
        await expect(page.get_by_role("status")).to_contain_text(re.compile(r"Showing 1\W12 of"))


class TestAccount:
    async def test_register_signs_in_and_the_keyboard_reaches_everything(
        self, new_page: MakePage
    ) -> None:
        page = await new_page()
        await open_shop(page, "/register")
        await assert_every_control_is_labelled(page)
        # By keyboard alone: the skip link first, then the form in order.
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        await page.get_by_label("Full name").focus()
        await page.keyboard.type("Browser Customer")
        await page.keyboard.press("Tab")
        await page.keyboard.type(f"browser-{uuid.uuid4().hex[:8]}@example.com")
        await page.keyboard.press("Tab")
        await page.keyboard.type("a-long-password")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("button", name="Sign out (Browser Customer)")).to_be_visible()
        await expect(page.get_by_role("link", name="My orders")).to_be_visible()

    async def test_a_taken_email_and_a_short_password_say_what_is_wrong(
        self, new_page: MakePage, shop: Any
    ) -> None:
        email = f"taken-{uuid.uuid4().hex[:8]}@example.com"
        await shop.register(email)
        page = await new_page()
        await open_shop(page, "/register")
        await page.get_by_label("Full name").fill("Someone")
        await page.get_by_label("E-mail").fill(email)
        await page.get_by_label("Password").fill("long-enough")
        await page.get_by_role("button", name="Create account").click()
        await expect(page.get_by_role("alert")).to_contain_text("exists already")

    async def test_a_wrong_password_is_refused_clearly(self, new_page: MakePage, shop: Any) -> None:
        email = f"wrong-{uuid.uuid4().hex[:8]}@example.com"
        await shop.register(email)
        page = await new_page()
        await open_shop(page, "/login")
        await page.get_by_label("E-mail").fill(email)
        await page.get_by_label("Password").fill("not-the-password")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_have_text(
            "That e-mail and password do not match an account."
        )


class TestOrders:
    async def test_the_customers_open_page_shows_shipped_without_a_reload(
        self, new_page: MakePage, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        product = await stocked_product(shop, gateway)
        email = f"live-{uuid.uuid4().hex[:8]}@example.com"
        await shop.register(email)
        response = await gateway.post(
            "/api/v1/orders",
            json={
                "items": [{"product_id": product["id"], "quantity": 1}],
                "payment_token": "tok_ok",
            },
            headers={**await shop.headers(email), "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text
        order = response.json()
        assert order["status"] == "confirmed"

        customer = await new_page(phone=True)
        await sign_in(customer, email, "correct-horse")
        await customer.get_by_role("link", name="My orders").click()
        await customer.locator(f"a[href='#/orders/{order['id']}']").click()
        status = customer.locator(".order-status")
        await expect(status).to_have_attribute("data-status", "confirmed")
        await expect(customer.get_by_role("row", name=re.compile(product["name"]))).to_be_visible()

        admin = await new_page()
        await sign_in(admin, "admin@example.com", "admin-e2e-password")
        await admin.get_by_role("link", name="All orders").click()
        card = admin.locator(f"li[data-order='{order['id']}']")
        await card.get_by_role("button", name="Mark shipped").click()
        await expect(card.locator(".badge")).to_have_text("shipped")

        # The customer's page was left open: the change arrives by itself.
        await expect(status).to_have_attribute("data-status", "shipped", timeout=15_000)
        await expect(status).to_contain_text("shipped")

    async def test_admin_pages_are_refused_to_customers(
        self, new_page: MakePage, shop: Any
    ) -> None:
        email = f"nosy-{uuid.uuid4().hex[:8]}@example.com"
        await shop.register(email)
        page = await new_page()
        await sign_in(page, email, "correct-horse")
        await expect(page.get_by_role("link", name="All orders")).to_have_count(0)
        await open_shop(page, "/admin/orders")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Not for you")

    async def test_signed_out_visitors_are_sent_to_sign_in(self, new_page: MakePage) -> None:
        page = await new_page()
        await open_shop(page, "/orders")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
        assert "next=%2Forders" in page.url


class TestDocs:
    async def test_the_whole_api_renders_offline_under_its_csp(
        self, new_page: MakePage, stack: Stack
    ) -> None:
        page = await new_page()
        outside: list[str] = []
        page.on(
            "request",
            lambda request: (
                None if request.url.startswith(stack.gateway_url) else outside.append(request.url)
            ),
        )
        await page.goto("/docs")
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text("E-commerce API")
        await expect(
            page.locator(".opblock-summary-path[data-path='/api/v1/orders']").first
        ).to_be_visible()
        assert await page.locator(".opblock-summary-path[data-path^='/internal']").count() == 0
        assert outside == []
