"""Access control: roles and scopes (``policy``), tokens (``tokens``), rate limits
(``ratelimit``) and the audit trail (``audit``). The HTTP wiring lives in ``serving.security``."""
