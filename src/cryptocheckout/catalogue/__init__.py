"""The shop's catalogue: products, prices and the stock of licence keys."""
