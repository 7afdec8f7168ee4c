"""Incoming NOWPayments notifications: verified, stored durably, then applied by the worker."""
