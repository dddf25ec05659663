"""Outputs: each module registers the outputs it is named for (one each, but ``sockets``: ``tcp``
and ``udp``); ``write`` returns once a batch is handed over. ``common`` (the ``batch:`` and
``buffer:`` options) and ``disk`` (``buffer: disk``) register nothing: every output uses them.
``pipenb.lang.catalog`` names the module of each output."""
