import sys

from ptyro_core.cli import main

sys.exit(main())
