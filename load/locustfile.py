"""Shoppers for Locust: a realistic mix through the gateway, then the system's invariants.

    make load USERS=50 DURATION=60s                 # headless, prints the table, checks
    uv run locust -f load/locustfile.py --host http://127.0.0.1:8000   # web UI on :8089

Most shoppers browse and search, some fill a cart, few check out; a share of payments
is declined and a share of requests is bad input, whose 4xx answers count as successes
(a 5xx or another status counts as a failure). At the start an administrator adds a
handful of products of the run's own with a known stock; at the end, with every order
settled, the run checks that no order is stuck `pending`, that nothing was oversold,
that stock was neither created nor lost (set = available + reserved + sold) and none is
left reserved (every confirmed order's stock committed, every other's given back), and
that every confirmed order of a shopper was notified, also those whose answer the
shopper never got (a process killed mid-checkout). A broken invariant makes the process
exit with 1. `make soak` runs it for ten minutes while the broker and a service restart.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
from locust import HttpUser, between, events, tag, task
from locust.env import Environment

ADMIN_EMAIL = os.environ.get("ADMIN_EMAIL", "admin@example.com")
ADMIN_PASSWORD = os.environ.get("ADMIN_PASSWORD", "admin12345")
#: Units each of the run's products starts with: few enough that some checkouts find
#: a product sold out, which is where overselling would show.
STOCK = int(os.environ.get("LOAD_STOCK", "40"))
PRODUCTS = int(os.environ.get("LOAD_PRODUCTS", "5"))
DECLINE_SHARE = 0.2
SEARCHES = ("headphones", "keyboard", "speaker", "lamp", "bottle", "mechanical keybord", "x")
#: How long the end of a run waits for orders still `pending` to settle (one abandoned
#: by a killed process waits for the sweep: the reservation TTL plus a grace period).
SETTLE_SECONDS = float(os.environ.get("LOAD_SETTLE_SECONDS", "30"))


@dataclass
class Run:
    """What the invariants are checked against, shared by every simulated shopper."""

    products: dict[str, int] = field(default_factory=dict)  # product id -> units set
    #: user id -> (access token, client address) of every shopper.
    shoppers: dict[str, tuple[str, str]] = field(default_factory=dict)
    ready: bool = False
    #: Whether the order service has the cart; without it shoppers order lines directly.
    has_cart: bool = True


RUN = Run()


def _client_address() -> str:
    """A client address of a documentation range (RFC 5737), as if behind the edge
    proxy: the gateway's per-client rate limit then applies to each client apart."""
    return f"198.51.{random.randint(0, 255)}.{random.randint(1, 254)}"


def _admin_session(host: str) -> requests.Session:
    session = requests.Session()
    session.headers["X-Forwarded-For"] = _client_address()
    response = session.post(
        f"{host}/api/v1/auth/token",
        data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        timeout=10,
    )
    response.raise_for_status()
    session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
    return session


@events.test_start.add_listener
def add_products(environment: Environment, **_: Any) -> None:
    """The run's own products, each with `STOCK` units on hand."""
    host = environment.host or "http://127.0.0.1:8000"
    admin = _admin_session(host)
    run_id = uuid.uuid4().hex[:8]
    for index in range(PRODUCTS):
        response = admin.post(
            f"{host}/api/v1/products",
            json={
                "sku": f"LOAD-{run_id}-{index}",
                "name": f"Load test item {index} ({run_id})",
                "description": "Made by `make load`.",
                "price": f"{random.randint(5, 80)}.{random.randint(0, 99):02d}",
                "category": "load-test",
            },
            timeout=10,
        )
        response.raise_for_status()
        product_id = response.json()["id"]
        stock = admin.put(
            f"{host}/api/v1/inventory/{product_id}", json={"available": STOCK}, timeout=10
        )
        stock.raise_for_status()
        RUN.products[product_id] = STOCK
    RUN.has_cart = admin.get(f"{host}/api/v1/cart", timeout=10).status_code != 404
    RUN.ready = True


class Shopper(HttpUser):
    """One person: registers, then browses, searches, fills a cart and sometimes buys."""

    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        address = _client_address()
        self.client.headers["X-Forwarded-For"] = address
        email = f"load-{uuid.uuid4().hex[:12]}@example.com"
        password = "load-test-password"
        registered = self.client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": password, "full_name": "Load Shopper"},
            name="/auth/register",
        )
        response = self.client.post(
            "/api/v1/auth/token",
            data={"username": email, "password": password},
            name="/auth/token",
        )
        self.token = response.json().get("access_token", "") if response.ok else ""
        self.auth = {"Authorization": f"Bearer {self.token}"}
        if registered.status_code == 201 and self.token:
            RUN.shoppers[registered.json()["id"]] = (self.token, address)

    @tag("browse")
    @task(10)
    def browse(self) -> None:
        offset = random.choice((0, 0, 0, 12, 24))
        response = self.client.get(
            f"/api/v1/products?limit=12&offset={offset}", name="/products?offset"
        )
        items = response.json().get("items", []) if response.ok else []
        if items:
            product = random.choice(items)
            self.client.get(f"/api/v1/products/{product['id']}", name="/products/{id}")
            self.client.get(f"/api/v1/inventory/{product['id']}", name="/inventory/{id}")

    @tag("browse")
    @task(6)
    def search(self) -> None:
        query = random.choice(SEARCHES)
        self.client.get("/api/v1/products", params={"q": query}, name="/products?q")

    @tag("cart")
    @task(3)
    def fill_cart(self) -> None:
        if not RUN.ready or not RUN.has_cart:
            return
        product_id = random.choice(list(RUN.products))
        self.client.put(
            f"/api/v1/cart/items/{product_id}",
            json={"quantity": random.randint(1, 3)},
            headers=self.auth,
            name="/cart/items/{id}",
        )

    @tag("checkout")
    @task(1)
    def checkout(self) -> None:
        if not RUN.ready:
            return
        token = "tok_decline" if random.random() < DECLINE_SHARE else "tok_ok"
        headers = {**self.auth, "Idempotency-Key": uuid.uuid4().hex}
        if RUN.has_cart:
            response = self.client.post(
                "/api/v1/cart/checkout",
                json={"payment_token": token, "shipping_address": _address()},
                headers=headers,
                name="/cart/checkout",
                catch_response=True,
            )
        else:
            lines = random.sample(list(RUN.products), k=random.randint(1, 2))
            response = self.client.post(
                "/api/v1/orders",
                json={
                    "items": [
                        {"product_id": product_id, "quantity": random.randint(1, 3)}
                        for product_id in lines
                    ],
                    "payment_token": token,
                },
                headers=headers,
                name="/orders (checkout)",
                catch_response=True,
            )
        with response:
            _settle_checkout(response)

    @tag("bad-input")
    @task(1)
    def bad_input(self) -> None:
        """Requests a client gets wrong; each must be a clear 4xx, never a 5xx."""
        cases = (
            ("GET", "/api/v1/products?limit=1000", None, 422, "/products?limit=1000"),
            ("GET", f"/api/v1/products/{uuid.uuid4()}", None, 404, "/products/{unknown}"),
            (
                "POST",
                "/api/v1/orders",
                {"items": [{"product_id": str(uuid.uuid4()), "quantity": 0}]},
                422,
                "/orders (bad body)",
            ),
            ("GET", "/api/v1/orders", None, 401, "/orders (no token)"),
        )
        method, path, body, expected, name = random.choice(cases)
        headers = self.auth if expected != 401 else {}
        if method == "POST":
            headers = {**headers, "Idempotency-Key": uuid.uuid4().hex}
        with self.client.request(
            method, path, json=body, headers=headers, name=name, catch_response=True
        ) as response:
            if response.status_code == expected:
                response.success()
            else:
                response.failure(f"expected {expected}, got {response.status_code}")


def _address() -> dict[str, str]:
    return {
        "full_name": "Load Shopper",
        "line1": "1 Test Street",
        "city": "Berlin",
        "postal_code": "10115",
        "country": "DE",
    }


def _settle_checkout(response: Any) -> None:
    """A checkout is a success when it answers as the contract says: confirmed,
    cancelled (declined, out of stock), 409 (sold out, or an empty cart), 202 pending."""
    if response.status_code in (201, 202, 409):
        response.success()
    else:
        response.failure(f"checkout answered {response.status_code}: {response.text[:200]}")


@events.test_stop.add_listener
def check_invariants(environment: Environment, **_: Any) -> None:
    """Stock neither oversold, created nor lost; every confirmed order notified."""
    if not RUN.products:
        return
    host = environment.host or "http://127.0.0.1:8000"
    admin = _admin_session(host)
    orders = _settled_orders(admin, host)
    problems = [
        f"order {order_id} stuck pending"
        for order_id, order in sorted(orders.items())
        if order["status"] == "pending"
    ]
    problems += _stock_problems(admin, host, orders) + _notification_problems(host, orders)
    confirmed = sum(
        1 for order in orders.values() if order["status"] in ("confirmed", "shipped", "delivered")
    )
    print(
        f"\nInvariants over {len(RUN.products)} products and {len(orders)} orders "
        f"({confirmed} confirmed):"
    )
    if problems:
        for problem in problems:
            print(f"  BROKEN: {problem}")
        environment.process_exit_code = 1
    else:
        print(
            "  none pending; no oversell; stock conserved (set = available + reserved + "
            "sold), none left reserved; every confirmed order notified"
        )


def _settled_orders(admin: requests.Session, host: str) -> dict[str, dict[str, Any]]:
    """Every order of the run's products, once none is `pending` any more."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        orders: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = admin.get(
                f"{host}/api/v1/orders", params={"limit": 100, "offset": offset}, timeout=30
            ).json()
            for order in page["items"]:
                if any(line["product_id"] in RUN.products for line in order["items"]):
                    orders[order["id"]] = order
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                break
        pending = [order for order in orders.values() if order["status"] == "pending"]
        if not pending or time.monotonic() > deadline:
            return orders
        time.sleep(1)


def _stock_levels(admin: requests.Session, host: str) -> dict[str, dict[str, int]]:
    """Each product's stock, once none is reserved any more (or the wait is over):
    settled orders commit or give back their reservations within moments."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        levels = {
            product_id: admin.get(f"{host}/api/v1/inventory/{product_id}", timeout=10).json()
            for product_id in RUN.products
        }
        if all(level["reserved"] == 0 for level in levels.values()):
            return levels
        if time.monotonic() > deadline:
            return levels
        time.sleep(1)


def _stock_problems(
    admin: requests.Session, host: str, orders: dict[str, dict[str, Any]]
) -> list[str]:
    problems = []
    sold = dict.fromkeys(RUN.products, 0)
    for order in orders.values():
        if order["status"] in ("confirmed", "shipped", "delivered"):
            for line in order["items"]:
                if line["product_id"] in sold:
                    sold[line["product_id"]] += line["quantity"]
    for product_id, stock in _stock_levels(admin, host).items():
        units = RUN.products[product_id]
        available, reserved = stock["available"], stock["reserved"]
        if available < 0 or reserved < 0:
            problems.append(f"{product_id}: oversold (available {available}, reserved {reserved})")
        if reserved:
            problems.append(f"{product_id}: {reserved} units still reserved with no order pending")
        if available + reserved + sold[product_id] != units:
            problems.append(
                f"{product_id}: set {units} != available {available} + reserved {reserved}"
                f" + sold {sold[product_id]}"
            )
    return problems


def _notified_orders(host: str, token: str, address: str) -> set[str]:
    """The orders a shopper was told are confirmed."""
    found: set[str] = set()
    offset = 0
    while True:
        page = requests.get(
            f"{host}/api/v1/notifications",
            params={"limit": 100, "offset": offset},
            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": address},
            timeout=10,
        ).json()
        items = page.get("items", [])
        found |= {item["order_id"] for item in items if item["kind"] == "order_confirmed"}
        offset += len(items)
        if not items or offset >= page.get("total", 0):
            return found


def _notification_problems(host: str, orders: dict[str, dict[str, Any]]) -> list[str]:
    """Every confirmed order of a shopper has its `order_confirmed` notification (given a
    few seconds: notifications follow events), whether or not its answer arrived."""
    expected = {
        order_id: order["user_id"]
        for order_id, order in orders.items()
        if order["status"] in ("confirmed", "shipped", "delivered")
        and order["user_id"] in RUN.shoppers
    }
    deadline = time.monotonic() + SETTLE_SECONDS
    missing = set(expected)
    while missing and time.monotonic() < deadline:
        for user_id in {expected[order_id] for order_id in missing}:
            missing -= _notified_orders(host, *RUN.shoppers[user_id])
        if missing:
            time.sleep(1)
    return [f"order {order_id} confirmed but not notified" for order_id in sorted(missing)]
