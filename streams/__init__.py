"""The event contract and the topics events travel on."""
