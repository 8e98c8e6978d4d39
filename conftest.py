"""Root of the test run.

The services' test folders sit inside folders named like the packages they test
(user_service/tests/...). With pytest's importlib mode that would make pytest register
an empty placeholder `user_service` module; importing the real packages first avoids it.
"""

import importlib.util

for _package in (
    "shared",
    "api_gateway",
    "user_service",
    "product_service",
    "inventory_service",
    "order_service",
    "notification_service",
):
    if importlib.util.find_spec(_package) is not None:
        importlib.import_module(_package)
