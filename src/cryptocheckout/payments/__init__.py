"""Payments: NOWPayments invoices and payments of an order, and the one state machine."""
