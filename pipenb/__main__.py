"""``python -m pipenb`` is the ``pipenb`` command."""

import sys

from pipenb.cli import main

sys.exit(main())
