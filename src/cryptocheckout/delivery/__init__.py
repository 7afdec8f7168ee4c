"""Delivery of licence keys: signed expiring links, the keys page, and the order e-mails."""
