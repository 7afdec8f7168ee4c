"""Webhooks to the shop's own systems, as the Standard Webhooks specification sends them.

Order events (`payments/events.py`) reach `service.react`, which enqueues one delivery job
per enabled endpoint whose filter takes the event, with a snapshot of the order. Delivery
jobs run in their own lane of the worker (`sender.DeliveryLane`), bounded per endpoint, so a
slow or dead endpoint never holds up payments; each attempt is logged, failures are retried
on `RETRY_SCHEDULE`, and an endpoint that keeps failing for days is disabled.
"""
