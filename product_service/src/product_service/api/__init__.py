"""HTTP routers of the product service, one module per resource."""
