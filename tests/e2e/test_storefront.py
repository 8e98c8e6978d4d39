"""The storefront and the API documentation in a real browser: Debian's Chromium
(scripts/ensure-chromium.sh installs it) driven by Playwright, against the whole system
running as real processes behind the gateway."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
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
            base_url=stack.gateway_url,
            viewport=PHONE if phone else {"width": 1280, "height": 900},
            locale="en-US",
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


async def assert_accessible(page: Page) -> None:
    """The basics a screen reader or keyboard user needs of a page: every control
    labelled, one h1 and no skipped heading level, ids unique and every reference to
    one resolvable, images described, the language declared."""
    problems = await page.evaluate(
        """() => {
            const found = [];
            for (const el of document.querySelectorAll('input, select, textarea, button')) {
                if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                    && !(el.textContent || '').trim()) found.push(`unlabelled ${el.outerHTML}`);
            }
            const h1 = document.querySelectorAll('h1').length;
            if (h1 !== 1) found.push(`${h1} h1`);
            let last = 0;
            for (const h of document.querySelectorAll('h1, h2, h3, h4, h5, h6')) {
                const level = Number(h.tagName[1]);
                if (last && level > last + 1) found.push(`h${level} after h${last}`);
                last = level;
            }
            const seen = new Set();
            for (const el of document.querySelectorAll('[id]')) {
                if (seen.has(el.id)) found.push(`duplicate id ${el.id}`);
                seen.add(el.id);
            }
            for (const name of ['aria-describedby', 'aria-labelledby', 'for']) {
                for (const el of document.querySelectorAll(`[${name}]`)) {
                    for (const id of el.getAttribute(name).split(/\\s+/).filter(Boolean)) {
                        if (!document.getElementById(id)) found.push(`${name} to no ${id}`);
                    }
                }
            }
            for (const img of document.querySelectorAll('img:not([alt])')) {
                found.push(`no alt ${img.src}`);
            }
            if (!document.documentElement.lang) found.push('no lang');
            return found;
        }"""
    )
    assert problems == []


async def assert_fits_a_phone(page: Page) -> None:
    """Nothing wider than the phone: no sideways scrolling."""
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]


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


async def place(
    gateway: httpx.AsyncClient, headers: dict[str, str], product: dict[str, Any], quantity: int = 1
) -> dict[str, Any]:
    """A confirmed order of `product`, placed through the API."""
    response = await gateway.post(
        "/api/v1/orders",
        json={
            "items": [{"product_id": product["id"], "quantity": quantity}],
            "payment_token": "tok_ok",
        },
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    assert order["status"] == "confirmed"
    return order


def money(amount: str) -> str:
    """How the pages show an amount of the seeded catalog's currency (en-US, USD)."""
    return f"${Decimal(amount):,.2f}"


class TestCatalog:
    async def test_search_and_a_product_with_its_stock_on_a_phone(
        self, new_page: MakePage, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        product = await stocked_product(shop, gateway, units=37)
        page = await new_page(phone=True)
        await open_shop(page)
        await expect(page.get_by_role("heading", level=1, name="Catalog")).to_be_visible()
        await expect(page.locator("ul.products > li").first).to_be_visible()
        await assert_accessible(page)

        await page.get_by_role("searchbox", name="Search").fill("mechanical keyboard")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Results for “mechanical keyboard”"
        )
        await page.get_by_role("link", name=product["name"]).click()
        await expect(page.get_by_role("heading", level=1, name=product["name"])).to_be_visible()
        await expect(page.locator(".stock")).to_have_text("37 in stock")
        await assert_fits_a_phone(page)

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
        await assert_accessible(page)
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


ADDRESS = {
    "Full name": "Ada Lovelace",
    "Address": "12 St James's Square",
    "City": "London",
    "Postal code": "SW1Y 4JH",
    "Country code": "GB",
}


async def fill_address(page: Page) -> None:
    for label, value in ADDRESS.items():
        await page.get_by_label(label, exact=True).fill(value)


async def cart_with(
    shop: Any, gateway: httpx.AsyncClient, email: str, product: dict[str, Any]
) -> None:
    """`email`'s cart holding one unit of `product` (put there through the API)."""
    response = await gateway.put(
        f"/api/v1/cart/items/{product['id']}",
        json={"quantity": 1},
        headers=await shop.headers(email),
    )
    assert response.status_code == 200, response.text


def order_requests(page: Page, order_id: str) -> list[str]:
    """The paths of the order's API the page asks for from now on."""
    asked: list[str] = []
    prefix = f"/api/v1/orders/{order_id}"
    page.on(
        "request",
        lambda request: (
            asked.append(path) if (path := httpx.URL(request.url).path).startswith(prefix) else None
        ),
    )
    return asked


async def ship_from_the_admin_page(admin: Page, order_id: str) -> None:
    await sign_in(admin, "admin@example.com", "admin-e2e-password")
    await admin.get_by_role("link", name="All orders").click()
    card = admin.locator(f"li[data-order='{order_id}']")
    await card.get_by_role("button", name="Mark shipped").click()
    await expect(card.locator(".badge")).to_have_text("shipped")


class TestOrders:
    async def test_register_search_buy_and_see_it_shipped_without_a_reload(
        self, new_page: MakePage, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        product = await stocked_product(shop, gateway)
        customer = await new_page(phone=True)
        await open_shop(customer, "/register")
        await customer.get_by_label("Full name").fill("Ada Lovelace")
        await customer.get_by_label("E-mail").fill(f"buyer-{uuid.uuid4().hex[:8]}@example.com")
        await customer.get_by_label("Password").fill("analytical-engine")
        await customer.get_by_role("button", name="Create account").click()
        await expect(customer.get_by_role("button", name="Sign out (Ada Lovelace)")).to_be_visible()

        await customer.get_by_role("link", name="Catalog").click()
        await customer.get_by_role("searchbox", name="Search").fill("mechanical keybord")
        await customer.keyboard.press("Enter")
        await customer.get_by_role("link", name=product["name"]).click()
        await customer.get_by_label("Quantity").fill("2")
        await customer.get_by_role("button", name="Add to cart").click()
        await expect(customer.get_by_role("alert")).to_contain_text(
            f"2 \N{MULTIPLICATION SIGN} {product['name']}"
        )
        await customer.get_by_role("link", name="Go to the cart").click()

        await expect(customer.get_by_role("heading", level=1, name="Your cart")).to_be_visible()
        line = customer.get_by_role("row", name=re.compile(re.escape(product["name"])))
        await expect(line.get_by_role("spinbutton")).to_have_value("2")
        await assert_accessible(customer)
        await assert_fits_a_phone(customer)
        await fill_address(customer)
        await customer.get_by_label("Payment").select_option("tok_ok")
        await customer.get_by_role("button", name=re.compile("^Pay ")).click()

        await expect(customer).to_have_url(re.compile(r"#/orders/[0-9a-f-]{36}$"))
        order_id = customer.url.rsplit("/", 1)[1]
        status = customer.locator(".order-status")
        await expect(status).to_have_attribute("data-status", "confirmed")
        await expect(customer.locator("address")).to_contain_text("SW1Y 4JH London")
        await expect(customer.locator(".timeline li")).to_have_count(2)  # created, confirmed
        await assert_accessible(customer)
        await assert_fits_a_phone(customer)
        asked = order_requests(customer, order_id)
        await customer.evaluate("window.stillTheFirstLoad = true")

        await ship_from_the_admin_page(await new_page(), order_id)

        # The customer's page was left open: the change arrives by itself, down the
        # order stream (opened before the admin acted), not by reloading or polling.
        await expect(status).to_have_attribute("data-status", "shipped", timeout=15_000)
        await expect(status).to_contain_text("shipped")
        await expect(customer.locator(".timeline li")).to_have_count(3)
        assert await customer.evaluate("window.stillTheFirstLoad === true")
        assert f"/api/v1/orders/{order_id}" not in asked

    async def test_without_the_stream_the_page_polls(
        self, new_page: MakePage, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        product = await stocked_product(shop, gateway)
        email = f"poll-{uuid.uuid4().hex[:8]}@example.com"
        await shop.register(email)
        order = await place(gateway, await shop.headers(email), product)
        customer = await new_page()
        # As behind a proxy or an order service without the stream.
        await customer.route(
            "**/stream",
            lambda route: route.fulfill(
                status=404,
                content_type="application/problem+json",
                body='{"type": "about:blank", "title": "Not Found", "status": 404}',
            ),
        )
        await sign_in(customer, email, "correct-horse")
        await open_shop(customer, f"/orders/{order['id']}")
        status = customer.locator(".order-status")
        await expect(status).to_have_attribute("data-status", "confirmed")

        shipped = await gateway.post(
            f"/api/v1/orders/{order['id']}/ship", headers=await shop.admin_headers()
        )
        assert shipped.status_code == 200, shipped.text

        await expect(status).to_have_attribute("data-status", "shipped", timeout=15_000)

    async def test_a_dropped_stream_is_opened_again_not_polled(
        self, new_page: MakePage, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        product = await stocked_product(shop, gateway)
        email = f"redial-{uuid.uuid4().hex[:8]}@example.com"
        await shop.register(email)
        order = await place(gateway, await shop.headers(email), product)
        customer = await new_page()
        streams: list[str] = []
        customer.on(
            "request",
            lambda request: (
                streams.append(request.url) if request.url.endswith("/stream") else None
            ),
        )
        # The first stream ends after its first event, as when a proxy or a restart
        # cuts it; the next ones reach the order service.
        first = {k: order[k] for k in ("status", "cancel_reason", "refunded_amount")}
        await customer.route(
            "**/stream",
            lambda route: route.fulfill(
                status=200,
                content_type="text/event-stream",
                body=f"event: status\ndata: {json.dumps({**first, 'at': order['updated_at']})}\n\n",
            ),
            times=1,
        )
        await sign_in(customer, email, "correct-horse")
        await open_shop(customer, f"/orders/{order['id']}")
        status = customer.locator(".order-status")
        await expect(status).to_have_attribute("data-status", "confirmed")
        asked = order_requests(customer, order["id"])
        for _ in range(100):
            if len(streams) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(streams) >= 2, streams

        shipped = await gateway.post(
            f"/api/v1/orders/{order['id']}/ship", headers=await shop.admin_headers()
        )
        assert shipped.status_code == 200, shipped.text

        await expect(status).to_have_attribute("data-status", "shipped", timeout=15_000)
        assert f"/api/v1/orders/{order['id']}" not in asked

    async def test_a_declined_payment_says_so_and_keeps_the_cart(
        self, new_page: MakePage, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        product = await stocked_product(shop, gateway)
        email = f"declined-{uuid.uuid4().hex[:8]}@example.com"
        await shop.register(email)
        await cart_with(shop, gateway, email, product)
        page = await new_page()
        await sign_in(page, email, "correct-horse")
        await page.get_by_role("link", name="Cart").click()
        await fill_address(page)
        await page.get_by_label("Payment").select_option("tok_decline")
        await page.get_by_role("button", name=re.compile("^Pay ")).click()

        alert = page.locator("form.checkout").get_by_role("alert")
        await expect(alert).to_have_text(
            "Your payment was declined. Nothing was charged; your cart is unchanged. "
            "Try another card."
        )
        await expect(alert).to_be_focused()
        await expect(
            page.get_by_role("row", name=re.compile(re.escape(product["name"])))
        ).to_be_visible()
        assert page.url.endswith("#/cart")

        # Another card, and the same form goes through: the declined try spent its key.
        await page.get_by_label("Payment").select_option("tok_ok")
        await page.get_by_role("button", name=re.compile("^Pay ")).click()
        await expect(page.locator(".order-status")).to_have_attribute("data-status", "confirmed")

    async def test_an_administrator_refunds_and_the_customer_sees_it(
        self, new_page: MakePage, shop: Any, gateway: httpx.AsyncClient
    ) -> None:
        product = await stocked_product(shop, gateway)
        email = f"refund-{uuid.uuid4().hex[:8]}@example.com"
        await shop.register(email)
        order = await place(gateway, await shop.headers(email), product, quantity=2)
        customer = await new_page()
        await sign_in(customer, email, "correct-horse")
        await open_shop(customer, f"/orders/{order['id']}")
        status = customer.locator(".order-status")
        await expect(status).to_have_attribute("data-status", "confirmed")

        admin = await new_page()
        await sign_in(admin, "admin@example.com", "admin-e2e-password")
        await admin.get_by_role("link", name="All orders").click()
        card = admin.locator(f"li[data-order='{order['id']}']")
        await card.locator("summary", has_text="Refund").click()
        await assert_accessible(admin)
        await card.get_by_label(f"Refund units of {product['name']}").fill("1")
        await card.get_by_label("Reason").fill("arrived scratched")
        await card.get_by_role("button", name="Refund", exact=True).click()

        unit = money(product["price"])
        await expect(card).to_contain_text(f"refunded {unit}")
        await expect(status).to_contain_text(f"refunded {unit}", timeout=15_000)
        await expect(customer.locator(".timeline li").last).to_contain_text("refunded")
        refunds = await gateway.get(
            f"/api/v1/orders/{order['id']}/refunds", headers=await shop.headers(email)
        )
        assert [r["reason"] for r in refunds.json()["items"]] == ["arrived scratched"]

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


#: What a first visit costs, from the browser's Performance API: bytes transferred
#: (the document, its assets, the API's answers) and milliseconds from navigation.
FIRST_LOAD = """() => {
    const [nav] = performance.getEntriesByType('navigation');
    const resources = performance.getEntriesByType('resource');
    const bytes = (entries) => entries.reduce((sum, entry) => sum + entry.transferSize, 0);
    const api = resources.filter((entry) => new URL(entry.name).pathname.startsWith('/api/'));
    const [ready] = performance.getEntriesByName('storefront-ready');
    return {
        requests: resources.length + 1,
        transferred_bytes: nav.transferSize + bytes(resources),
        api_bytes: bytes(api),
        dom_content_loaded_ms: Math.round(nav.domContentLoadedEventEnd),
        interactive_ms: Math.round(ready.startTime),
    };
}"""


class TestFirstLoad:
    async def test_the_catalog_is_light_and_soon_usable(self, new_page: MakePage) -> None:
        page = await new_page(phone=True)  # a context of its own: nothing cached
        await open_shop(page)
        figures = await page.evaluate(FIRST_LOAD)
        print(f"storefront first load: {figures}")  # shown with `pytest -s`

        # Every asset was fetched (no cache yet) and counted: well under a typical
        # page's weight, and usable in well under a second on an idle machine (the
        # budgets leave room for a busy CI machine).
        assert figures["requests"] >= 12
        assert 20_000 < figures["transferred_bytes"] < 150_000, figures
        assert figures["interactive_ms"] < 5_000, figures


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
