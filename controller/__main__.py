"""`python -m controller -c config/controller.yaml`: the call controller."""

import sys

from controller.cli import main

sys.exit(main())
