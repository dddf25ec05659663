"""Tornado handlers of the HTTP API: parse, call a service, serialise. No business logic here."""
