"""`python -m authz_service`: the same as `authz-service`."""

import sys

from .cli import main

sys.exit(main())
