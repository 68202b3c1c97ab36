"""`python -m controller -c config/controller.yaml`: the call controller."""

import sys

from controller.app import main

sys.exit(main())
