"""Root of the test run.

The test folders sit inside folders named like the packages they test
(user_service/tests/..., shared/eventbus/tests/...). With pytest's importlib mode that
would make pytest register an empty placeholder module of that name; importing the real
packages first avoids it.

The fixtures every service's tests share come from the `service_testing` plugin
(dev/service_testing), registered by its `pytest11` entry point.
"""

import importlib

from devstack import SERVICES

for _package in ("shared", "eventbus", *(spec.package for spec in SERVICES)):
    importlib.import_module(_package)
