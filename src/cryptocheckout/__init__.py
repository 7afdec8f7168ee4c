"""cryptocheckout: a self-hosted crypto checkout for digital-goods shops, on NOWPayments."""

__version__ = "0.1.0"
