"""What a Meta webhook POST says, whatever the product: `{"object": ..., "entry": [...]}`.

Each `object` has its own entry shape (`page`: `entry[].messaging[]`; `instagram` the same;
`whatsapp_business_account`: `entry[].changes[].value`), so each has its own parser in `PARSERS`,
turning entries into `items`: customer messages and receipts for our own messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from services.ingest.meta import messenger
from services.ingest.meta.items import Item


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    object: str
    entry: list[dict[str, Any]]


Parser = Callable[[list[dict[str, Any]]], list[Item]]

# A Meta object missing here is acknowledged and ignored: answering an error would only make
# Meta retry it, and eventually disable the webhook.
PARSERS: dict[str, Parser] = {"page": messenger.parse_entries}
