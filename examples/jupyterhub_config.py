"""JupyterHub for a team sharing one pipenb fleet (docs/jupyter.md, "Teams on JupyterHub").

Every user's Jupyter server runs the pipenb extension on the same PostgreSQL database, so all of
them see one fleet: the same agents, pipes and deployments, one audit trail with each person's
hub name. Agents do not talk to the users' servers (those come and go): they reach the fleet
through standalone `pipenb server` processes on the same database, behind one address (the
`pipenb.lan` nginx below), and a deploy made from any notebook wakes them through PostgreSQL.

    pip install jupyterhub 'pipenb_fleet-<version>-py3-none-any.whl[jupyter,postgres]'
    jupyterhub -f examples/jupyterhub_config.py

The values to change are marked CHANGE.
"""

import os

c = get_config()  # noqa: F821 - JupyterHub provides it

# CHANGE: the team's database, reachable from every user's server and every `pipenb server`.
# A password belongs in ~/.pgpass or PGPASSWORD for the hub's service, not here.
PIPENB_DB = os.environ.get("PIPENB_DB_URL", "postgresql://pipenb@db.lan/pipenb")
# CHANGE: the key that seals secret parameters: the same file for every process of the fleet,
# readable by each user's server (mode 0640, group of the team) and by the pipenb servers.
PIPENB_SECRET_KEY = "/etc/pipenb/secret.key"

# Who may do what in pipenb, by hub user name (pipenb roles: viewer, editor, admin). A user's own
# server makes its user an admin of pipenb unless named here; name everyone instead.
PIPENB_ROLES = {"ana": "admin", "bo": "editor", "cy": "viewer"}

c.JupyterHub.bind_url = "http://127.0.0.1:8000"  # CHANGE: behind your TLS proxy
c.JupyterHub.authenticator_class = "jupyterhub.auth.PAMAuthenticator"  # CHANGE: your login
c.Authenticator.allowed_users = set(PIPENB_ROLES)

# Each single-user server loads the pipenb extension (enabled on install) with these traitlets.
c.Spawner.args = [
    f"--PipenbExtension.db_url={PIPENB_DB}",
    f"--PipenbExtension.secret_key_file={PIPENB_SECRET_KEY}",
    "--PipenbExtension.default_role=viewer",
    *(f"--PipenbExtension.roles={name}={role}" for name, role in PIPENB_ROLES.items()),
]
# Agents enroll through the pipenb servers with tokens (`pipenb enroll-tokens create`), so the
# users' servers take no bootstrap enrollment key.

# The agents' address, in front of two or more `pipenb server` processes on the same database:
#
#   pipenb server --host 127.0.0.1 --port 8765 --db-url "$PIPENB_DB_URL" \
#       --secret-key-file /etc/pipenb/secret.key --tls-cert ... --tls-key ...
#   pipenb server --host 127.0.0.1 --port 8766 ...    (the same options)
#
# nginx (pipenb.lan):
#
#   upstream pipenb { server 127.0.0.1:8765; server 127.0.0.1:8766; }
#   server {
#       listen 443 ssl; server_name pipenb.lan; ...
#       location /pipenb/api/v1/ {
#           proxy_pass https://pipenb;
#           proxy_http_version 1.1;
#           proxy_set_header Connection "";
#           proxy_buffering off;
#           proxy_read_timeout 90s;             # above the agents' long poll (30 s)
#           proxy_next_upstream error timeout;  # a process that is down: the next one
#       }
#   }
#
# and on each worker host:  pipenb agent --server https://pipenb.lan --enroll-key pnbe_...
