"""Fulfilment: a paid order's licence keys are handed out by a background job."""
