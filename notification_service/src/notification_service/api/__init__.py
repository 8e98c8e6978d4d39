"""HTTP routers of the notification service, one module per resource."""
