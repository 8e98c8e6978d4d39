"""Screenshots of the storefront's main pages for the README, from a running system:

    make run      # in another terminal
    uv run python scripts/storefront_screenshots.py [--gateway http://127.0.0.1:8000]

Drives Debian's Chromium with Playwright as a customer (registers, fills the cart,
checks out) and as the administrator; writes docs/screenshots/*.png, shrunk with
pngquant when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def ready(page: Page, path: str) -> None:
    await page.goto(f"/#{path}")
    await expect(page.locator("html[data-ready=true]")).to_have_count(1)
    await page.wait_for_load_state("networkidle")


async def sign_in(page: Page, email: str, password: str) -> None:
    await ready(page, "/login")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out", exact=False)).to_be_visible()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--admin-email", default=os.environ.get("ADMIN_EMAIL", "admin@example.com"))
    parser.add_argument("--admin-password", default=os.environ.get("ADMIN_PASSWORD", "admin12345"))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        desktop = await browser.new_context(
            base_url=args.gateway, viewport={"width": 1200, "height": 800}
        )
        phone = await browser.new_context(
            base_url=args.gateway, viewport={"width": 390, "height": 844}, device_scale_factor=2
        )
        page = await desktop.new_page()
        await ready(page, "/")
        await page.screenshot(path=OUT / "catalog.png")
        mobile = await phone.new_page()
        await ready(mobile, "/?q=headphones")
        await mobile.screenshot(path=OUT / "search-phone.png")
        first = page.locator("ul.products a").first
        await first.click()
        await expect(page.locator(".stock")).to_be_visible()
        await page.screenshot(path=OUT / "product.png")
        email = f"screens-{uuid.uuid4().hex[:8]}@example.com"
        await ready(page, "/register")
        await page.get_by_label("Full name").fill("Ada Lovelace")
        await page.get_by_label("E-mail").fill(email)
        await page.get_by_label("Password").fill("analytical-engine")
        await page.get_by_role("button", name="Create account").click()
        await expect(page.get_by_role("button", name="Sign out (Ada Lovelace)")).to_be_visible()
        await ready(page, "/")
        await page.locator("ul.products a").first.click()
        await page.get_by_role("button", name="Add to cart").click()
        await page.get_by_role("link", name="Go to the cart").click()
        await expect(page.get_by_role("heading", name="Checkout")).to_be_visible()
        for label, value in (
            ("Full name", "Ada Lovelace"),
            ("Address", "12 St James's Square"),
            ("City", "London"),
            ("Postal code", "SW1Y 4JH"),
            ("Country code", "GB"),
        ):
            await page.get_by_label(label, exact=True).fill(value)
        await page.screenshot(path=OUT / "cart.png", full_page=True)
        await page.get_by_role("button", name="Pay", exact=False).click()
        await expect(page.locator(".order-status")).to_be_visible()
        await expect(page.locator(".timeline li")).to_have_count(2)
        await page.screenshot(path=OUT / "order.png", full_page=True)
        admin = await (
            await browser.new_context(
                base_url=args.gateway, viewport={"width": 1200, "height": 800}
            )
        ).new_page()
        await sign_in(admin, args.admin_email, args.admin_password)
        await ready(admin, "/admin/orders")
        await admin.locator("summary", has_text="Refund").first.click()
        await admin.screenshot(path=OUT / "admin-orders.png")
        await page.goto("/docs")
        await expect(page.locator(".swagger-ui .info .title")).to_be_visible()
        await page.screenshot(path=OUT / "docs.png")
        await browser.close()
    shrink(sorted(OUT.glob("*.png")))
    print(f"screenshots in {OUT}")


def shrink(pictures: list[Path]) -> None:
    """Quantise the pictures to 256 colours (pngquant, when installed: `apt-get install
    pngquant`): a quarter of the bytes in the repository, no visible difference."""
    pngquant = shutil.which("pngquant")
    if pngquant is None:
        print("pngquant is not installed: the screenshots stay full size")
        return
    subprocess.run(
        [
            pngquant,
            "--force",
            "--skip-if-larger",
            "--strip",
            "--ext",
            ".png",
            "--",
            *map(str, pictures),
        ],
        check=False,  # 98 or 99: a picture that would not shrink stays as it is
    )


if __name__ == "__main__":
    asyncio.run(main())
