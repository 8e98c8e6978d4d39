"""HTTP routers of the inventory service, one module per resource."""
