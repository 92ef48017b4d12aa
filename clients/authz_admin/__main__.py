"""`python -m authz_admin`: the same as `authz-admin`."""

import sys

from .cli import main

sys.exit(main())
