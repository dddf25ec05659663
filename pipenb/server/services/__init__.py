"""Business logic of the control plane, one service per resource. Handlers only call these."""
