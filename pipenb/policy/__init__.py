"""Agent policy: what pipes may touch on a worker host, set there and never by the server.

``model``  the ``Policy`` (read, write, connect, listen, exec, scripts, preview), from a file,
           flags or a check-in's report, and back to plain data;
``rules``  the matching: path globs, directories, ``host:port`` patterns, allowed commands, and
           the paths no pipe may touch whatever the policy says (``protected_paths``);
``pipe``   what a rendered pipe asks for (``accesses``) and ``check_pipe``: the one check the
           server runs at deploy time and the worker runs before starting a pipe;
``guard``  the ``Guard`` the worker hands its components, checked where files and sockets are
           opened, after symlinks are resolved.

Standard library only (and ``pipenb.errors``): the agent process imports this, and must stay small.
"""

from pipenb.errors import PolicyError
from pipenb.policy.model import Policy, PolicyFileError
from pipenb.policy.pipe import Access, accesses, check_pipe

__all__ = ["Access", "Policy", "PolicyError", "PolicyFileError", "accesses", "check_pipe"]
