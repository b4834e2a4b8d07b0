"""``python -m sepo <stage> --config file.yaml`` (also ``accelerate launch -m sepo ...``)."""

import sys

from sepo.cli import main

sys.exit(main())
