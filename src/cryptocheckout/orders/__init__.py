"""Orders: what a customer buys, priced from the catalogue."""
