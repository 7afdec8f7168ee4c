"""The customer pages: the storefront, checkout and the order page, rendered on the server."""
