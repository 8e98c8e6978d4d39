"""The notification service's problem types: what its routes answer when a request
cannot be done."""

from __future__ import annotations

import uuid

from shared.errors import NotFound, ResourceNotFound, UnprocessableEntity


class WebhookNotFound(ResourceNotFound):
    title = "Webhook not found"
    type_slug = "webhook-not-found"
    resource = "webhook endpoint"


class DeliveryNotFound(NotFound):
    title = "Delivery not found"
    type_slug = "webhook-delivery-not-found"

    def __init__(self, delivery_id: uuid.UUID) -> None:
        super().__init__(f"The endpoint has no delivery with id {delivery_id}.")


class ForbiddenWebhookUrl(UnprocessableEntity):
    title = "Webhook URL not allowed"
    type_slug = "webhook-url-not-allowed"
