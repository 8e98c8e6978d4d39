"""Webhooks: endpoints administrators register, a delivery per endpoint and event
written with the event's inbox row, and the worker that signs (Standard Webhooks),
sends and retries them.

- `signing_secrets`: the signing secrets, made and encrypted at rest
- `url_guard`: which hosts an endpoint may point at
- `schedule`: what an answer means (done, retry, give up) and when to retry
- `repository`, `service`: the SQL and the use cases (routes, event fan-out)
- `sender`, `worker`: one signed POST, and the loop that claims and sends deliveries
"""
