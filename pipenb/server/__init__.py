"""The control plane: stores pipes, agents, keys and deployments; answers agents' check-ins.

It never calls an agent. ``make_app`` builds the tornado application whose handlers also mount
inside Jupyter; ``pipenb server`` runs it on its own. ``install.py`` and ``install.sh`` are
what it hands a worker host installing an agent (its own wheel and the bootstrap script).
"""
