"""Signed webhooks: endpoints per organization, an outbox of deliveries, and the deliverer."""
