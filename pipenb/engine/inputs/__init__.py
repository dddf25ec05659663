"""Inputs: each module registers the inputs it is named for (one each, but ``sockets``: ``tcp``
and ``udp``); all yield ``Batch``es and may resume a checkpoint. What several inputs share
(line decoding, addresses, schedules) lives outside this folder: ``pipenb.engine.codecs``,
``pipenb.engine.net``, ``pipenb.engine.schedule``. ``pipenb.lang.catalog`` names the module of
each input."""
