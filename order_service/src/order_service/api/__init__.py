"""HTTP routers of the order service, one module per resource."""
