"""The order domain: the state machine, pricing from the catalog and the checkout saga."""
