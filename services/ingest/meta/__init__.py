"""Meta's messaging platforms: Facebook Messenger now; Instagram and WhatsApp share the plumbing.

- `signature`: the X-Hub-Signature-256 check every Meta webhook needs.
- `webhook`: the envelope every Meta webhook posts (`object`, `entry`) and a parser per `object`.
- `messenger`: the `page` object's events (messages, postbacks, receipts) and their normalization.
- `graph`: the Graph API calls (page check, user profile, Send API) and Meta's error shape.
- `profiles`: senders' names by PSID, cached.
- `replies`: the Send API as a `ReplySender`, with Meta's error handling.
"""
